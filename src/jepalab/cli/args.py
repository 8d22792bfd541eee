r"""Arguments of every ``jepalab`` command, and the checks made before any compute.

Every command but ``train`` (Hydra) takes ``key=value`` arguments in the syntax of ``jepalab
train`` (OmegaConf dot lists: ``ckpt=runs/x probes=[linear,knn] sweep.lr=[1e-3,3e-4]``),
checked against a dataclass schema so that a misspelt key or a wrong type is an error that
names it (:func:`parse_overrides`). Flags of the argparse style of earlier versions
(``--episodes 3``, a bare path) are answered with the ``key=value`` to type instead.
:func:`check_output` makes sure a result file can be written before anything is computed.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jepalab.errors import ConfigError

T = TypeVar("T")


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
    """One ``key=default`` line per field of a (nested) dataclass schema, followed by the
    field's ``metadata["help"]`` where it has one."""
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
        text = f.metadata.get("help")
        lines.append(f"  {prefix}{f.name}={default}" + (f"  {text}" if text else ""))
    return lines


def _is_bool_field(schema: type, name: str) -> bool:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    return name in fields and fields[name].type in (bool, "bool")


def _old_style_hint(
    arg: str, following: str | None, schema: type, aliases: Mapping[str, str]
) -> tuple[str, str]:
    """What to type instead of the flag ``arg`` (and the value ``following`` it, if it takes
    one), and what that replaces: ``--episodes 3`` -> ``episodes=3``, ``--no-progress`` ->
    ``progress=false``, ``--from ijepa`` -> ``src_format=ijepa`` with an alias."""
    name, _, value = arg[2:].partition("=")
    key = aliases.get(name, name.replace("-", "_"))
    if key.startswith("no_") and _is_bool_field(schema, key[3:]):
        return f"{key[3:]}=false", arg
    if _is_bool_field(schema, key) and not value:
        return f"{key}=true", arg
    taken = following is not None and "=" not in following and not following.startswith("-")
    if not value and taken:
        return f"{key}={following}", f"{arg} {following}"
    return f"{key}={value or '...'}", arg


def parse_overrides(
    args: Sequence[str],
    schema: type[T],
    prog: str,
    *,
    positional: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> T:
    """Parse ``key=value`` arguments into an instance of the dataclass ``schema``.

    Raises :class:`UsageError` naming the offending key (unknown key, wrong type, a
    required ``???`` value not given, or an argument that is not ``key=value``). An
    argument in the argparse style of earlier versions gets the ``key=value`` to type
    instead: ``--flag`` (``aliases`` maps an old flag name to its key), or a bare value,
    taken as the key ``positional`` (e.g. ``"ckpt"``).
    """
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            following = args[i + 1] if i + 1 < len(args) else None
            hint, given = _old_style_hint(arg, following, schema, aliases or {})
            raise UsageError(f"{prog}: arguments are key=value: {hint} instead of {given}")
        if "=" not in arg or arg.startswith("="):
            if positional:
                hint = f"{positional}={arg}"
                raise UsageError(f"{prog}: arguments are key=value: {hint} instead of {arg}")
            raise UsageError(
                f"{prog}: arguments are key=value, got {arg!r}; `{prog} --help` lists the keys"
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
