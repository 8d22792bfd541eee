"""The ``jepalab`` command line.

jepalab train [key=value ...]      pretrain (Hydra; default: I-JEPA on the embedded digits)
jepalab train experiment=NAME      a recipe from configs/experiment/
jepalab train -m key=a,b           a Hydra multirun sweep
jepalab list                       registered encoders, predictors, datasets, experiments
jepalab collect [--out DIR] [--episodes N] [--length T] [--seed S]
                [--door-start-fraction F] [--overwrite]
                                   random-walk Two-Rooms episodes as a trajectory dataset
                                   (default: data/two_rooms, 1000 episodes of 32 frames)
jepalab collect --env ID [--policy random|expert|weak] [--size PX] ...
                                   episodes of a Gymnasium env with pixels, e.g. stable-
                                   worldmodel's swm/TwoRoom-v1, swm/PushT-v1 (jepalab[envs])
jepalab convert-trajectories SRC.npz DEST [--fps F] [--overwrite]
                                   stacked arrays (frames, actions[, states]) -> a trajectory
                                   dataset (format: docs/trajectories.md)
jepalab convert --from FORMAT --to FORMAT IN OUT
                                   official checkpoint <-> jepalab (FORMAT: jepalab, ijepa,
                                   vjepa, vjepa2, vjepa2_ac, vjepa2_ac_extrinsics; --from auto
                                   detects), e.g. --from vjepa2 --to jepalab vitl.pt vitl_jl.pt
jepalab eval probe ckpt=RUN [key=value ...]
                                   linear / k-NN / attentive probes of a run's frozen encoder
                                   (target or context), lr x wd sweep; JSON + table
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

import logging
import os
import sys
import traceback
from collections.abc import Sequence

from jepalab.cli.args import ArgumentParser
from jepalab.errors import ConfigError, DataError, UserError

USAGE = __doc__


def _train(overrides: Sequence[str]) -> int:
    """Hydra composes the config, makes the run directory (``.hydra/``) and runs sweeps;
    errors come back here for :func:`main` to report, instead of Hydra's own report."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from jepalab.cli.train import train
    from jepalab.cli.validate import validate_config
    from jepalab.config import config_dir, register_configs

    register_configs()
    failed: list[Exception] = []

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            validate_config(cfg)
            if cfg.run_dir is None:
                cfg.run_dir = HydraConfig.get().runtime.output_dir
            train(cfg)
        except Exception as exc:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the launcher (maybe a SLURM job) must see the job fail
            failed.append(exc)  # Hydra would print its own report and exit with 1

    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["jepalab", *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors: raised, not printed + exit(1)
    try:
        _main()
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    if failed:
        raise failed[0]
    return 0


def _list(args: Sequence[str]) -> int:
    from jepalab.config import config_dir
    from jepalab.data import list_datasets
    from jepalab.models import list_encoders, list_predictors

    ArgumentParser(
        prog="jepalab list",
        description="List the registered encoders, predictors, datasets and experiments.",
    ).parse_args(args)
    experiments = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    for title, names in (
        ("encoders", list_encoders()),
        ("predictors", list_predictors()),
        ("datasets", list_datasets()),
        ("experiments", experiments),
    ):
        print(f"{title}: {', '.join(names)}")
    return 0


def _collect(args: Sequence[str]) -> int:
    from jepalab.data.trajectories import describe, read_meta
    from jepalab.envs.collect import DOOR_START_FRACTION, collect_two_rooms

    parser = ArgumentParser(
        prog="jepalab collect",
        description="Collect episodes as a trajectory dataset: random-walk Two-Rooms (ours), "
        "or any Gymnasium environment with pixels (--env, e.g. swm/TwoRoom-v1, swm/PushT-v1).",
    )
    parser.add_argument("--env", default=None, help="a Gymnasium id (default: our Two-Rooms)")
    parser.add_argument(
        "--policy", default="random", help="with --env: random | expert | weak (default random)"
    )
    parser.add_argument("--size", type=int, default=64, help="with --env: frame side in pixels")
    parser.add_argument("--out", default=None, help="output directory")
    parser.add_argument("--episodes", type=int, default=None, help="default 1000 (--env: 100)")
    parser.add_argument(
        "--length", type=int, default=None, help="frames per episode (default 32; --env: 100)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--door-start-fraction",
        type=float,
        default=DOOR_START_FRACTION,
        help="Two-Rooms: share of episodes started next to the door (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    opts = parser.parse_args(args)
    if opts.env is not None:
        from jepalab.envs.gym_collect import collect_gymnasium

        name = opts.env.replace("/", "_")
        root = collect_gymnasium(
            opts.out or f"data/{name}",
            opts.env,
            policy=opts.policy,
            num_episodes=opts.episodes or 100,
            episode_length=opts.length or 100,
            seed=opts.seed,
            image_size=opts.size,
            overwrite=opts.overwrite,
            progress=not opts.no_progress,
        )
        print(f"jepalab collect: {describe(root)}")
        return 0
    root = collect_two_rooms(
        opts.out or "data/two_rooms",
        num_episodes=opts.episodes or 1000,
        episode_length=opts.length or 32,
        seed=opts.seed,
        door_start_fraction=opts.door_start_fraction,
        overwrite=opts.overwrite,
        progress=not opts.no_progress,
    )
    crossings = read_meta(root)["source"]["episodes_changing_room"]
    print(f"jepalab collect: {describe(root)}; {crossings} episodes cross the door")
    return 0


def _convert_trajectories(args: Sequence[str]) -> int:
    import numpy as np

    from jepalab.data.trajectories import describe, from_arrays

    parser = ArgumentParser(
        prog="jepalab convert-trajectories",
        description="Write stacked arrays from one .npz as a trajectory dataset.",
    )
    parser.add_argument(
        "src",
        help=".npz with frames (E,T,H,W[,C]) uint8, actions (E,T-1,A), optional states (E,T,S)",
    )
    parser.add_argument("dest", help="output directory")
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    opts = parser.parse_args(args)
    with np.load(opts.src, allow_pickle=False) as npz:
        missing = [key for key in ("frames", "actions") if key not in npz.files]
        if missing:
            raise DataError(
                f"{opts.src} has no {missing} (keys: {npz.files}); it needs frames "
                "(E,T,H,W[,C]) uint8 and actions (E,T-1,A)"
            )
        states = npz["states"] if "states" in npz.files else None
        source = {"converted_from": str(opts.src)}
        root = from_arrays(
            opts.dest,
            npz["frames"],
            npz["actions"],
            states,
            fps=opts.fps,
            source=source,
            overwrite=opts.overwrite,
        )
    print(f"jepalab convert-trajectories: {describe(root)}")
    return 0


def _convert(args: Sequence[str]) -> int:
    from jepalab.interop import FORMATS, convert_file

    parser = ArgumentParser(
        prog="jepalab convert",
        description="Convert official I-JEPA / V-JEPA / V-JEPA 2 checkpoints to jepalab's "
        "layout and back (docs: README, 'Official checkpoints').",
    )
    parser.add_argument("--from", dest="source", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--to", dest="target", required=True, choices=FORMATS)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .pth.tar)")
    parser.add_argument("dest", help="output file")
    opts = parser.parse_args(args)
    if opts.source == opts.target:
        raise ConfigError(f"--from and --to are both {opts.target!r}")
    if "jepalab" not in (opts.source, opts.target) and opts.source != "auto":
        raise ConfigError(f"--from {opts.source} --to {opts.target}: one side must be 'jepalab'")
    source = convert_file(opts.src, opts.dest, opts.source, opts.target)
    print(f"jepalab convert: {opts.src} ({source}) -> {opts.dest} ({opts.target})")
    return 0


EVAL_COMMANDS = {
    "probe": "jepalab.cli.probe",
    "surprise": "jepalab.cli.surprise",
}


EVAL_USAGE = """usage: jepalab eval {probe,surprise} [key=value ...]

  jepalab eval probe ckpt=RUN ...     frozen-feature probes (linear, k-NN, attentive)
  jepalab eval surprise ckpt=RUN ...  intuitive-physics surprise on possible / impossible clips

jepalab eval probe --help, jepalab eval surprise --help: their keys."""


def _eval(args: Sequence[str]) -> int:
    import importlib

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
    module = importlib.import_module(EVAL_COMMANDS[args[0]])
    return module.main(list(args[1:]))


def _plan(args: Sequence[str]) -> int:
    from jepalab.cli.plan import main as plan_main

    return plan_main(args)


HELP = ("-h", "--help", "help")
COMMANDS = {
    "train": _train,
    "list": _list,
    "collect": _collect,
    "convert": _convert,
    "convert-trajectories": _convert_trajectories,
    "eval": _eval,
    "plan": _plan,
}


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
        return COMMANDS[command](rest)
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
