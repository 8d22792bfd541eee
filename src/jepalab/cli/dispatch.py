"""The ``jepalab`` command line: one dispatch table, every argument ``key=value``.

jepalab train [key=value ...]      pretrain (Hydra; default: I-JEPA on the embedded digits)
jepalab train experiment=NAME      a recipe from configs/experiment/
jepalab train -m key=a,b           a Hydra multirun sweep
jepalab list                       registered encoders, predictors, datasets, experiments
jepalab collect [key=value ...]    episodes as a trajectory dataset: random-walk Two-Rooms
                                   (default: out=data/two_rooms episodes=1000 length=32), or
                                   env=ID policy=random|expert|weak of a Gymnasium env with
                                   pixels, e.g. stable-worldmodel's swm/TwoRoom-v1,
                                   swm/PushT-v1 (jepalab[envs])
jepalab convert-trajectories src=ARRAYS.npz out=DIR [fps=F] [overwrite=true]
                                   stacked arrays (frames, actions[, states]) -> a trajectory
                                   dataset (format: docs/trajectories.md)
jepalab convert src=IN out=OUT out_format=FORMAT [src_format=FORMAT]
                                   official checkpoint <-> jepalab (FORMAT: jepalab, ijepa,
                                   vjepa, vjepa2, vjepa2_ac, vjepa2_ac_extrinsics; src_format
                                   auto detects), e.g. src=vitl.pt out=vitl_jl.pt out_format=jepalab
jepalab eval probe ckpt=RUN [key=value ...]
                                   linear / k-NN / attentive probes of a run's frozen encoder
                                   (target or context), picked on validation; JSON + table
jepalab eval surprise ckpt=RUN [key=value ...]
                                   intuitive-physics surprise on procedural possible /
                                   impossible clip pairs: pairwise accuracy, AUROC, plot
jepalab plan ckpt=RUN [key=value ...]   (e.g. episodes=20 planner=mppi baselines=true)
                                   plan with a trained action-conditioned model in Two-Rooms:
                                   success rate, distance to goal, planning time per step;
                                   env=swm/TwoRoom-v1 (or another id): stable-worldmodel's
                                   dataset-mode protocol, data=DIR of collected episodes

A mistake in a config, the data, a checkpoint or a path ends a command with one line,
``jepalab <command>: error: ...`` naming what to change, and exit code 2. ``--debug``
(anywhere on the line) or HYDRA_FULL_ERROR=1 shows the traceback instead; an unexpected
exception (a bug) always does. ``--help`` works at every level (``jepalab eval --help``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from jepalab.errors import ConfigError, UserError

USAGE = __doc__
HELP = ("-h", "--help", "help")


LIST_USAGE = """usage: jepalab list

Prints the registered components, one line per kind:
  encoders     names for encoder.name (jepalab.create_encoder)
  predictors   names for predictor.name (jepalab.create_predictor)
  datasets     names for data.name
  experiments  recipes for `jepalab train experiment=NAME` (configs/experiment/)"""


def list_components(args: Sequence[str]) -> int:
    """``jepalab list``: the registered encoders, predictors, datasets and experiments."""
    from jepalab.config import config_dir
    from jepalab.data import list_datasets
    from jepalab.models import list_encoders, list_predictors

    if any(a in HELP for a in args):
        print(LIST_USAGE)
        return 0
    if args:
        raise ConfigError(f"takes no arguments, got {args[0]!r}")
    experiments = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    for title, names in (
        ("encoders", list_encoders()),
        ("predictors", list_predictors()),
        ("datasets", list_datasets()),
        ("experiments", experiments),
    ):
        print(f"{title}: {', '.join(names)}")
    return 0


EVAL_USAGE = """usage: jepalab eval {probe,surprise} [key=value ...]

  jepalab eval probe ckpt=RUN ...     frozen-feature probes (linear, k-NN, attentive)
  jepalab eval surprise ckpt=RUN ...  intuitive-physics surprise on possible / impossible clips

jepalab eval probe --help, jepalab eval surprise --help: their keys."""


def evaluate(args: Sequence[str]) -> int:
    """``jepalab eval NAME ...``: the evaluation command ``NAME`` of :data:`EVAL_COMMANDS`."""
    if args and args[0] in HELP:
        print(EVAL_USAGE)
        return 0
    if not args or args[0] not in EVAL_COMMANDS:
        given = repr(args[0]) if args else "nothing"
        raise ConfigError(
            f"got {given}; use one of: "
            + ", ".join(f"jepalab eval {name} ..." for name in EVAL_COMMANDS)
            + " (--help for their keys)"
        )
    return resolve(EVAL_COMMANDS[args[0]])(list(args[1:]))


# The dispatch table: command -> "module:function" taking the rest of the command line and
# returning the exit code; modules are imported only for the command that runs.
COMMANDS: dict[str, str] = {
    "train": "jepalab.cli.train:main",
    "list": "jepalab.cli.dispatch:list_components",
    "collect": "jepalab.cli.collect:main",
    "convert": "jepalab.cli.convert:convert",
    "convert-trajectories": "jepalab.cli.convert:convert_trajectories",
    "eval": "jepalab.cli.dispatch:evaluate",
    "plan": "jepalab.cli.plan:main",
}
EVAL_COMMANDS: dict[str, str] = {
    "probe": "jepalab.cli.probe:main",
    "surprise": "jepalab.cli.surprise:main",
}


def resolve(target: str) -> Callable[[list[str]], int]:
    """The function a dispatch-table entry ``"module:function"`` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for a user error, reported as one line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if not args or args[0] in HELP:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"jepalab: error: unknown command {command!r}; one of: {', '.join(COMMANDS)} "
            "(jepalab --help)",
            file=sys.stderr,
        )
        return 2
    prog = f"jepalab {command}"
    if command == "eval" and rest and rest[0] in EVAL_COMMANDS:
        prog += f" {rest[0]}"
    try:
        return resolve(COMMANDS[command])(rest)
    except SystemExit as exc:  # argparse's and Hydra's --help
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: the whole traceback
        if debug:
            traceback.print_exc()
        else:
            print(f"{prog}: error: {one_line(exc, prog)}", file=sys.stderr)
        return 2


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a mistake the user can fix (the message says how), not a bug:
    jepalab's :class:`~jepalab.errors.UserError`, and the built-in, OmegaConf and Hydra
    errors that our code and Hydra's config composition raise with a message naming the key,
    file or value."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(
        exc,
        (
            UserError,
            ValueError,
            KeyError,
            FileNotFoundError,
            FileExistsError,
            PermissionError,
            NotADirectoryError,
            IsADirectoryError,
            OmegaConfBaseException,
            HydraException,
        ),
    )


def one_line(exc: BaseException, prog: str = "jepalab") -> str:
    """``exc``'s message as one line: OmegaConf's key details and Hydra's wrapped cause
    folded in, whitespace collapsed, a repeated ``jepalab <command>:`` prefix dropped."""
    from omegaconf.errors import OmegaConfBaseException

    text = _message(exc)
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and not isinstance(exc, OmegaConfBaseException):
        # Hydra's "Could not override 'x'.\nTo append ... use +x=..." (not for a typed config)
        text = f"{text.splitlines()[0].rstrip('.')}: {_message(cause, text)}"
    text = text.split("Config search path:")[0]  # Hydra's list of config sources
    text = " ".join(text.split())
    for prefix in (f"{prog}: ", "jepalab: "):
        text = text.removeprefix(prefix)
    return text


def _message(exc: BaseException, context: str = "") -> str:
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, OmegaConfBaseException):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        key = getattr(exc, "full_key", None)
        named = key and str(key) in first + context
        return first if not key or named else f"{first} (key {key})"
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        arg = exc.args[0]
        return arg if " " in arg else f"key {arg!r} not found"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
