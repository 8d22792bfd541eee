"""Atomic checkpoints: write to a temporary file, fsync, rename; load with ``weights_only``.

A run killed at any instant leaves either the previous checkpoint or the new one on disk,
never a half-written file under a checkpoint name.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from jepalab.errors import CheckpointError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles).

    Raises :class:`~jepalab.errors.CheckpointError` naming the file when it is truncated or
    not a checkpoint, ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        message = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"checkpoint {path} is unreadable (damaged or not a torch checkpoint: {message})"
        ) from err


def _load_or_warn(path: Path, step: int, map_location: str | torch.device) -> dict | None:
    try:
        return load_checkpoint(path, map_location)
    except Exception as err:  # a damaged file must not end the run: fall back
        reason = err.__cause__ or err
        log.warning(
            "checkpoint %s (step %d) is unreadable (%s); trying an older one", path, step, reason
        )
        return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the newest checkpoint of a run directory (``RUN`` or
    ``RUN/checkpoints``)."""
    path = Path(path)
    if path.is_dir():
        ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = list_checkpoints(ckpt_dir)
        if not found:
            raise FileNotFoundError(f"no checkpoint (step_*.pt) in {ckpt_dir}")
        return found[-1][1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_newest(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict]:
    """``(file, state)``: a checkpoint file as given, or the newest checkpoint of a run
    directory (``RUN`` or ``RUN/checkpoints``) that loads -- a damaged newer one is skipped
    with a warning naming it, as a resumed run skips it. Raises
    :class:`~jepalab.errors.CheckpointError` when none of them loads."""
    newest = resolve_checkpoint(path)  # FileNotFoundError: no such file, or no checkpoint
    if Path(path).is_file():
        return newest, load_checkpoint(newest, map_location)
    found = list_checkpoints(newest.parent)
    for step, file in reversed(found):
        state = _load_or_warn(file, step, map_location)
        if state is not None:
            return file, state
    raise CheckpointError(
        f"every checkpoint in {newest.parent} is unreadable ({len(found)} file(s), newest "
        f"{newest.name}); the warnings above say why"
    )


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(directory)[:-keep_last]:
        path.unlink(missing_ok=True)
