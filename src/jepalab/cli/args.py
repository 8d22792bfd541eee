r"""Arguments of every ``jepalab`` command, and the checks made before any compute.

The evaluation commands take the same override syntax as ``jepalab train`` (OmegaConf dot
lists: ``ckpt=runs/x probes=[linear,knn] sweep.lr=[1e-3,3e-4]``), checked against a schema so
that a misspelt key or a wrong type is an error that names it. The others use
:class:`ArgumentParser`, whose usage errors are one-line :class:`ConfigError`\ s.
:func:`check_output` makes sure a result file can be written before anything is computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jepalab.errors import ConfigError

T = TypeVar("T")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are :class:`ConfigError` (reported as one line by
    :func:`main`) instead of a usage block and ``sys.exit(2)``."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message} (--help lists the options)")


def check_output(path: str | Path, option: str) -> Path:
    """Make sure a file can be written at ``path`` before any compute: creates its folder
    and a scratch file there. Raises :class:`ConfigError` naming the folder and the
    ``option`` that chooses the file, so that a long evaluation does not lose its results
    at the end."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            f"cannot write {path}: its folder {path.parent} is not writable ({reason}); "
            f"choose another file with {option}"
        ) from err
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name with {option}")
    return path


class UsageError(ConfigError):
    """Bad command-line arguments; the message says which and what is allowed (one line:
    ``jepalab`` prints it as ``<prog>: error: ...``)."""


def describe_schema(schema: type, prefix: str = "") -> list[str]:
    """One ``key=default`` line per field of a (nested) dataclass schema."""
    lines = []
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "???"
        if dataclasses.is_dataclass(default):
            lines += describe_schema(type(default), f"{prefix}{f.name}.")
            continue
        lines.append(f"  {prefix}{f.name}={default}")
    return lines


def parse_overrides(args: Sequence[str], schema: type[T], prog: str) -> T:
    """Parse ``key=value`` arguments into an instance of the dataclass ``schema``.

    Raises :class:`UsageError` naming the offending key (unknown key, wrong type, a
    required ``???`` value not given, or an argument that is not ``key=value``).
    """
    bad = [a for a in args if "=" not in a or a.startswith("=")]
    if bad:
        raise UsageError(
            f"{prog}: arguments are key=value, got {bad[0]!r}; `{prog} --help` lists the keys"
        )
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(args)))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise UsageError(f"{prog}: required value(s) not given: {', '.join(missing)}")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
        first = str(exc).splitlines()[0]
        raise UsageError(
            f"{prog}: {first}"
            + (f" (key {key!r})" if key else "")
            + f"; `{prog} --help` lists the keys"
        ) from None
