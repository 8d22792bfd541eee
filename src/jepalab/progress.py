"""Progress of a long loop: a tqdm bar on a terminal, plain lines everywhere else.

A bar redraws itself with carriage returns; written to a file (CI, SLURM, ``> log.txt``) its
frames pile up into one line of tens of kilobytes. :func:`progress_bar` therefore draws a tqdm
bar only when its stream (stderr) is a terminal, and otherwise writes one complete line

    train digits: step 120/1540 (8%), loss=0.4123 lr=2.10e-04 img_s=812, elapsed 1:10, eta 13:48

every 5% of the total (:data:`LINE_FRACTION`), at least every :data:`LINE_SECONDS` seconds
while the loop moves, and at its end. Every loop with progress output (training, planning,
data collection, feature extraction, surprise scoring) goes through here.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm

LINE_FRACTION = 0.05  # a progress line every 5% of the total ...
LINE_SECONDS = 60.0  # ... or after a minute without one, whichever comes first
UNKNOWN_TOTAL_EVERY = 100  # updates between lines when the total is unknown


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    enabled: bool = True,
    unit: str = "it",
    initial: int = 0,
    file: IO[str] | None = None,
    **tqdm_kwargs: Any,
) -> tqdm | LineProgress:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise, a silent tqdm when not
    ``enabled``. Both take ``update``, ``set_postfix``, ``close``, ``with`` and iteration;
    ``tqdm_kwargs`` (``leave``, ``dynamic_ncols``, ...) only reach the tqdm bar."""
    stream = sys.stderr if file is None else file
    common = dict(total=total, desc=desc, unit=unit, initial=initial)
    if not enabled:
        return tqdm(iterable, disable=True, **common)
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **common, **tqdm_kwargs)
    return LineProgress(iterable, file=stream, **common)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """Progress as whole lines (no carriage returns): ``desc: unit n/total (pct%), postfix,
    elapsed, eta``; see the module docstring for when a line is written."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: int = 0,
        file: IO[str] | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start = self._written = initial
        self.file = sys.stderr if file is None else file
        self.postfix = ""
        self.every = max(1, math.ceil(total * LINE_FRACTION)) if total else UNKNOWN_TOTAL_EVERY
        self._t0 = self._last_line = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        due = self.n // self.every > self._written // self.every
        if due or self.n == self.total or now - self._last_line >= LINE_SECONDS:
            self._write(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs):
        """Shown on the next line, as tqdm shows it on the bar: ``key=value ...``."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and self.n != self._written:
            self._write(time.perf_counter())
        self._closed = True

    def line(self, now: float | None = None) -> str:
        """The current progress as one line."""
        elapsed = (time.perf_counter() if now is None else now) - self._t0
        if self.total:
            count = f"{self.unit} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
        else:
            count = f"{self.unit} {self.n}"
        parts = [count]
        if self.postfix:
            parts.append(self.postfix)
        timing = f"elapsed {_clock(elapsed)}"
        done = self.n - self._start
        if self.total and done > 0 and self.n < self.total:
            timing += f", eta {_clock(elapsed / done * (self.total - self.n))}"
        parts.append(timing)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _write(self, now: float) -> None:
        self.file.write(self.line(now) + "\n")
        self.file.flush()
        self._written, self._last_line = self.n, now


def _clock(seconds: float) -> str:
    """``73.4 -> '1:13'``, ``3725 -> '1:02:05'``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


__all__ = ["LINE_FRACTION", "LINE_SECONDS", "LineProgress", "progress_bar"]
