"""The ``jepalab`` command line.

jepalab train [key=value ...]      pretrain (Hydra; default: I-JEPA on the embedded digits)
jepalab train experiment=NAME      a recipe from configs/experiment/
jepalab train -m key=a,b           a Hydra multirun sweep
jepalab list                       registered encoders, predictors, datasets, experiments
jepalab collect [--out DIR] [--episodes N] [--length T] [--seed S]
                [--door-start-fraction F] [--overwrite]
                                   random-walk Two-Rooms episodes as a trajectory dataset
                                   (default: data/two_rooms, 1000 episodes of 32 frames)
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
jepalab plan RUN_DIR [--episodes N] [--planner cem|mppi] [--baselines] ...
                                   plan with a trained action-conditioned model in Two-Rooms:
                                   success rate, distance to goal, planning time per step
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

USAGE = __doc__


def _train(overrides: Sequence[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from jepalab.config import config_dir, register_configs
    from jepalab.experiment import train

    register_configs()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        if cfg.run_dir is None:
            cfg.run_dir = HydraConfig.get().runtime.output_dir
        train(cfg)

    argv = sys.argv
    sys.argv = ["jepalab", *overrides]
    try:
        _main()
    finally:
        sys.argv = argv
    return 0


def _list() -> int:
    from jepalab.config import config_dir
    from jepalab.data import list_datasets
    from jepalab.models import list_encoders, list_predictors

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

    parser = argparse.ArgumentParser(
        prog="jepalab collect", description="Collect random-walk Two-Rooms episodes."
    )
    parser.add_argument("--out", default="data/two_rooms", help="output directory")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--length", type=int, default=32, help="frames per episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--door-start-fraction",
        type=float,
        default=DOOR_START_FRACTION,
        help="share of episodes started next to the door (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    opts = parser.parse_args(args)
    try:
        root = collect_two_rooms(
            opts.out,
            num_episodes=opts.episodes,
            episode_length=opts.length,
            seed=opts.seed,
            door_start_fraction=opts.door_start_fraction,
            overwrite=opts.overwrite,
            progress=not opts.no_progress,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"jepalab collect: {exc}", file=sys.stderr)
        return 2
    crossings = read_meta(root)["source"]["episodes_changing_room"]
    print(f"jepalab collect: {describe(root)}; {crossings} episodes cross the door")
    return 0


def _convert_trajectories(args: Sequence[str]) -> int:
    import numpy as np

    from jepalab.data.trajectories import describe, from_arrays

    parser = argparse.ArgumentParser(
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
            print(
                f"jepalab convert-trajectories: {opts.src} has no {missing} (keys: "
                f"{npz.files}); it needs frames (E,T,H,W[,C]) uint8 and actions (E,T-1,A).",
                file=sys.stderr,
            )
            return 2
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

    parser = argparse.ArgumentParser(
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
        print(f"jepalab convert: --from and --to are both {opts.target!r}", file=sys.stderr)
        return 2
    if "jepalab" not in (opts.source, opts.target) and opts.source != "auto":
        print("jepalab convert: one side must be 'jepalab'", file=sys.stderr)
        return 2
    try:
        source = convert_file(opts.src, opts.dest, opts.source, opts.target)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"jepalab convert: {exc}", file=sys.stderr)
        return 2
    print(f"jepalab convert: {opts.src} ({source}) -> {opts.dest} ({opts.target})")
    return 0


EVAL_COMMANDS = {
    "probe": "jepalab.eval.probe_cli",
    "surprise": "jepalab.eval.surprise_cli",
}


def _eval(args: Sequence[str]) -> int:
    import importlib

    from jepalab.eval.cli_args import UsageError

    if not args or args[0] not in EVAL_COMMANDS:
        given = repr(args[0]) if args else "nothing"
        print(
            f"jepalab eval: got {given}; use one of: "
            + ", ".join(f"jepalab eval {name} ..." for name in EVAL_COMMANDS)
            + " (--help for keys)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(EVAL_COMMANDS[args[0]])
    try:
        return module.main(list(args[1:]))
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "train":
        return _train(rest)
    if command == "list":
        return _list()
    if command == "collect":
        return _collect(rest)
    if command == "convert":
        return _convert(rest)
    if command == "convert-trajectories":
        return _convert_trajectories(rest)
    if command == "eval":
        return _eval(rest)
    if command == "plan":
        from jepalab.plan import main as plan_main

        return plan_main(rest)
    print(f"jepalab: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
