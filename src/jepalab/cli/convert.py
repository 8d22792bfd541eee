"""``jepalab convert`` (official checkpoints <-> jepalab) and ``jepalab convert-trajectories``
(stacked arrays -> a trajectory dataset), both ``key=value``::

    jepalab convert src=vitl.pt out=vitl_jepalab.pt out_format=jepalab   # src_format: auto
    jepalab convert src=vitl_jepalab.pt out=vitl.pt out_format=vjepa2    # and back, identical
    jepalab convert-trajectories src=arrays.npz out=data/mine fps=10
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import MISSING

from jepalab.cli.args import describe_schema, parse_overrides
from jepalab.errors import ConfigError, DataError

HELP = ("-h", "--help", "help")


@dataclass
class ConvertArgs:
    """The keys of ``jepalab convert`` (FORMAT: jepalab, ijepa, vjepa, vjepa2, vjepa2_ac,
    vjepa2_ac_extrinsics)."""

    src: str = field(default=MISSING, metadata={"help": "input checkpoint (.pth / .pt / .tar)"})
    out: str = field(default=MISSING, metadata={"help": "output file"})
    src_format: str = field(default="auto", metadata={"help": "FORMAT, or auto: detect it"})
    out_format: str = field(default=MISSING, metadata={"help": "FORMAT"})


@dataclass
class ConvertTrajectoriesArgs:
    """The keys of ``jepalab convert-trajectories``."""

    src: str = field(
        default=MISSING,
        metadata={"help": ".npz: frames (E,T,H,W[,C]) uint8, actions (E,T-1,A)[, states (E,T,S)]"},
    )
    out: str = field(default=MISSING, metadata={"help": "output directory"})
    fps: float | None = None
    overwrite: bool = field(default=False, metadata={"help": "replace an existing dataset"})


OLD_FLAGS = {"from": "src_format", "to": "out_format"}  # `jepalab convert --from X --to Y`


def convert(argv: Sequence[str]) -> int:
    from jepalab.interop import FORMATS, convert_file

    prog = "jepalab convert"
    if any(a in HELP for a in argv):
        print(__doc__ + "\nkeys (default):\n" + "\n".join(describe_schema(ConvertArgs)))
        return 0
    args = parse_overrides(argv, ConvertArgs, prog, positional="src", aliases=OLD_FLAGS)
    for key, allowed in (("src_format", ("auto", *FORMATS)), ("out_format", FORMATS)):
        if getattr(args, key) not in allowed:
            raise ConfigError(f"{key}={getattr(args, key)!r}: must be one of {list(allowed)}")
    if args.src_format == args.out_format:
        raise ConfigError(f"src_format and out_format are both {args.out_format!r}")
    if "jepalab" not in (args.src_format, args.out_format) and args.src_format != "auto":
        raise ConfigError(
            f"src_format={args.src_format} out_format={args.out_format}: one side must be 'jepalab'"
        )
    source = convert_file(args.src, args.out, args.src_format, args.out_format)
    print(f"{prog}: {args.src} ({source}) -> {args.out} ({args.out_format})")
    return 0


def convert_trajectories(argv: Sequence[str]) -> int:
    import numpy as np

    from jepalab.data.trajectories import describe, from_arrays

    prog = "jepalab convert-trajectories"
    if any(a in HELP for a in argv):
        print(__doc__ + "\nkeys (default):\n" + "\n".join(describe_schema(ConvertTrajectoriesArgs)))
        return 0
    args = parse_overrides(argv, ConvertTrajectoriesArgs, prog, positional="src")
    with np.load(args.src, allow_pickle=False) as npz:
        missing = [key for key in ("frames", "actions") if key not in npz.files]
        if missing:
            raise DataError(
                f"{args.src} has no {missing} (keys: {npz.files}); it needs frames "
                "(E,T,H,W[,C]) uint8 and actions (E,T-1,A)"
            )
        states = npz["states"] if "states" in npz.files else None
        root = from_arrays(
            args.out,
            npz["frames"],
            npz["actions"],
            states,
            fps=args.fps,
            source={"converted_from": str(args.src)},
            overwrite=args.overwrite,
        )
    print(f"{prog}: {describe(root)}")
    return 0
