"""``jepalab collect [key=value ...]``: episodes as a trajectory dataset (docs/trajectories.md).

Without ``env=``, random-walk episodes of our Two-Rooms world (default ``data/two_rooms``,
1000 episodes of 32 frames); with ``env=ID``, episodes of a Gymnasium environment with pixels,
e.g. stable-worldmodel's ``swm/TwoRoom-v1`` under its expert policy (``jepalab[envs]``;
default ``data/<ID>``, 100 episodes of 100 frames)::

    jepalab collect out=data/two_rooms
    jepalab collect env=swm/TwoRoom-v1 policy=expert episodes=200
    jepalab collect env=swm/PushT-v1 policy=weak episodes=200 size=64
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from jepalab.cli.args import describe_schema, parse_overrides
from jepalab.envs.collect import DOOR_START_FRACTION

PROG = "jepalab collect"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class CollectArgs:
    """The keys of ``jepalab collect`` (``None``: the default of the chosen world)."""

    env: str | None = field(default=None, metadata=_help("a Gymnasium id; none: our Two-Rooms"))
    policy: str = field(default="random", metadata=_help("with env: random | expert | weak"))
    size: int = field(default=64, metadata=_help("with env: frame side in pixels"))
    out: str | None = field(default=None, metadata=_help("data/two_rooms; with env: data/<ID>"))
    episodes: int | None = field(default=None, metadata=_help("1000; with env: 100"))
    length: int | None = field(default=None, metadata=_help("frames per episode: 32; env: 100"))
    seed: int = field(default=0, metadata=_help("episode i is seeded with seed + i"))
    door_start_fraction: float = field(
        default=DOOR_START_FRACTION,
        metadata=_help("Two-Rooms: share of episodes started next to the door"),
    )
    overwrite: bool = field(default=False, metadata=_help("replace an existing dataset"))
    progress: bool = True


def collect(args: CollectArgs) -> str:
    """Collect the dataset ``args`` describe; returns the line that reports it."""
    from jepalab.data.trajectories import describe, read_meta

    if args.env is not None:
        from jepalab.envs.gym_collect import collect_gymnasium

        root = collect_gymnasium(
            args.out or f"data/{args.env.replace('/', '_')}",
            args.env,
            policy=args.policy,
            num_episodes=args.episodes or 100,
            episode_length=args.length or 100,
            seed=args.seed,
            image_size=args.size,
            overwrite=args.overwrite,
            progress=args.progress,
        )
        return f"{PROG}: {describe(root)}"
    from jepalab.envs.collect import collect_two_rooms

    root = collect_two_rooms(
        args.out or "data/two_rooms",
        num_episodes=args.episodes or 1000,
        episode_length=args.length or 32,
        seed=args.seed,
        door_start_fraction=args.door_start_fraction,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    crossings = read_meta(root)["source"]["episodes_changing_room"]
    return f"{PROG}: {describe(root)}; {crossings} episodes cross the door"


def main(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__ + "\nkeys (default):\n" + "\n".join(describe_schema(CollectArgs)))
        return 0
    print(collect(parse_overrides(argv, CollectArgs, PROG)))
    return 0
