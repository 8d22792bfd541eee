"""Intuitive-physics benchmark: matched possible / impossible clips of moving digits.

The violation-of-expectation protocol of the V-JEPA intuitive-physics study [0] (after
IntPhys [1]) in the world of :class:`~jepalab.data.MovingDigits`. Each *pair* is two clips that
are identical before a known event frame ``e``; from ``e`` on, the possible twin keeps obeying
the training data's physics (constant velocity, elastic bounces) and the impossible twin
breaks one rule. Every event is built from two clips ``A`` and ``B`` that are each possible
throughout; the *forward* pair is ``(A, A[:e] + B[e:])`` and, with ``balanced=True``, the
*reverse* pair is ``(B, B[:e] + A[e:])``:

* ``vanish``: A the digit, B an empty canvas. Forward: the digit disappears; reverse: it
  appears from nothing (object permanence).
* ``teleport``: A and B the same digit on two paths, B through a random point at least half
  the free room from A's position at ``e``, with A's velocity there. Forward: the digit jumps
  and moves on; reverse: it jumps back (continuity of trajectories).
* ``wall``: A a :class:`~jepalab.data.moving_digits.Wall` across the canvas that the digit
  bounces off, exactly as in ``MovingDigits(walls=...)`` training clips (same room, same
  renderer); B no wall, the digit's free path through the same contact point. The motions are
  spliced, the wall stays as it was, so both clips of a pair hold the same things. Forward: the
  digit passes through the wall, drawn over it (solidity); reverse: it bounces off nothing
  (inertia).
* ``colour``: A full intensity, B 25-50% (the data are grayscale). Forward: the digit dims;
  reverse: it brightens (colour constancy).
* ``shape``: A and B two digits of different classes, same size and motion. Forward: the
  digit changes; reverse: it changes back (shape constancy).

Why both directions: a forward pair alone also differs in *what* follows the event (an empty
canvas, a dim digit), and a model's prediction error depends on content as much as on
physics -- a trained V-JEPA is far less surprised by an empty canvas than by any moving digit
(docs/surprise.md). In the reverse pair the same content sits on the other side, so a model
that only reacts to content scores 50% over both, as in IntPhys's matched quadruplets [1]
(possible and impossible clips show the same frames overall).

Until the event every clip is drawn exactly as a :class:`MovingDigits` clip is (its trajectory
sampler and renderer, the same canvas, digit sizes and speeds, the *test* split's digits), so
a model trained on moving digits is in distribution up to the violation -- except for an empty
canvas and dim digits, which are new to the model and on both sides of the balance, and the
wall, which is new unless the model trained with ``walls > 0``. Clips are longer than a
model's window (16 frames for 8-frame encoders) and are scored by sliding windows
(:mod:`jepalab.eval.surprise`). A benchmark is a pure function of its arguments and seed;
:meth:`PhysicsBenchmark.save` / :meth:`PhysicsBenchmark.load` keep one fixed in an ``.npz``.

[0] Garrido et al. 2025, "Intuitive physics understanding emerges from self-supervised
    pretraining on natural videos".
[1] Riochet et al. 2018, "IntPhys: A Framework and Benchmark for Visual Intuitive Physics
    Reasoning".
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepalab.data.moving_digits import (
    _DIRECTIONS,
    MIN_WALL_ROOM,
    MOVING_DIGITS_MEAN,
    MOVING_DIGITS_STD,
    MovingDigits,
    Trajectory,
    Wall,
    check_wall_room,
)
from jepalab.data.sampling import mix_seed

EVENTS = ("vanish", "teleport", "wall", "colour", "shape")
# What the impossible twin does, forward and reverse (table rows, plots).
VIOLATIONS = {
    "vanish": ("disappears", "appears"),
    "teleport": ("jumps", "jumps back"),
    "wall": ("passes through wall", "bounces off no wall"),
    "colour": ("dims", "brightens"),
    "shape": ("changes digit", "changes back"),
}
PHYSICS_FORMAT = "jepalab-physics-pairs-v1"

COLOUR_FACTOR = (0.25, 0.5)  # intensity multiplier of the impossible digit after the event


@dataclass
class PhysicsBenchmark:
    """Matched possible / impossible clips with their violation type and frame.

    Attributes:
        possible: float32 ``(P, T, H, W)`` frames in ``[0, 1]``.
        impossible: float32 ``(P, T, H, W)``; equal to ``possible`` before each event frame.
        events: ``(P,)`` str, the event type of each pair (one of :data:`EVENTS`).
        event_frames: int64 ``(P,)``, the first frame at which the twins differ.
        reverse: bool ``(P,)``, True for a reverse pair ``(B, B[:e] + A[e:])``.
        config: the generation arguments (what :func:`make_physics_benchmark` was called with).
    """

    possible: np.ndarray
    impossible: np.ndarray
    events: np.ndarray
    event_frames: np.ndarray
    reverse: np.ndarray
    config: dict[str, Any]

    def violations(self) -> list[str]:
        """``(P,)`` what each impossible twin does, e.g. ``"disappears"`` / ``"appears"``."""
        return [VIOLATIONS[e][int(r)] for e, r in zip(self.events, self.reverse, strict=True)]

    def __len__(self) -> int:
        return len(self.events)

    @property
    def clip_frames(self) -> int:
        return int(self.possible.shape[1])

    @property
    def canvas_size(self) -> int:
        return int(self.possible.shape[-1])

    def clips(self, which: str, normalise: bool = True) -> Tensor:
        """``(P, 1, T, H, W)`` float32 clips of one side (``"possible"`` or ``"impossible"``),
        normalised as :class:`MovingDigits` normalises its clips (model input) or in [0, 1]."""
        if which not in ("possible", "impossible"):
            raise ValueError(f"which={which!r}: use 'possible' or 'impossible'")
        frames = torch.from_numpy(getattr(self, which))[:, None]
        if normalise:
            frames = (frames - MOVING_DIGITS_MEAN) / MOVING_DIGITS_STD
        return frames

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` (compressed) with the clips and the metadata as JSON."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": PHYSICS_FORMAT, "config": self.config}
        with open(path, "wb") as f:  # a file object: numpy appends no ".npz" to the name
            np.savez_compressed(
                f,
                possible=self.possible,
                impossible=self.impossible,
                events=self.events.astype(str),
                event_frames=self.event_frames,
                reverse=self.reverse,
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhysicsBenchmark:
        """Read a benchmark written by :meth:`save`."""
        with np.load(Path(path).expanduser(), allow_pickle=False) as data:
            if "meta" not in data.files:
                raise ValueError(f"{path} is not a physics benchmark (no 'meta' entry)")
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != PHYSICS_FORMAT:
                raise ValueError(
                    f"{path} has format {meta.get('format')!r}, this version reads "
                    f"{PHYSICS_FORMAT!r}; regenerate it with make_physics_benchmark"
                )
            return cls(
                data["possible"],
                data["impossible"],
                data["events"].astype(str),
                data["event_frames"].astype(np.int64),
                data["reverse"].astype(bool),
                meta["config"],
            )


def make_physics_benchmark(
    pairs_per_event: int = 100,
    events: Sequence[str] = EVENTS,
    clip_frames: int = 16,
    canvas_size: int = 32,
    digit_size: tuple[int, int] = (10, 14),
    speed: tuple[float, float] = (1.0, 3.0),
    event_frames: tuple[int, int] | None = None,
    split: str = "test",
    seed: int = 0,
    wall_width: int = 2,
    balanced: bool = True,
) -> PhysicsBenchmark:
    """Generate matched possible / impossible pairs (see the module docstring).

    Args:
        pairs_per_event: Pairs of each event type (and direction, with ``balanced``).
        events: Event types, a subset of :data:`EVENTS`; pairs are grouped by event in this
            order.
        clip_frames: Frames per clip.
        canvas_size, digit_size, speed: As :class:`MovingDigits` (use the training data's).
        event_frames: Inclusive ``(first, last)`` range of the event frame, drawn uniformly per
            pair; default the middle quarter of the clip, ``(3T/8, 5T/8)``.
        split: Source digits (``"test"``: never seen in pretraining).
        seed: Pair ``i`` of event ``k`` is drawn from ``(seed, k, i)`` alone, so a pair does
            not change when other events or more pairs are generated.
        wall_width: Thickness of the wall in pixels (as the training data's ``wall_width``).
        balanced: Follow every forward pair with its reverse pair (same ``A``, ``B``, event
            frame); False keeps forward pairs only, whose post-event content differs.

    Returns:
        The benchmark, clips in ``[0, 1]``.
    """
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise ValueError(f"events={list(events)}: choose one or more of {list(EVENTS)}")
    if pairs_per_event < 1:
        raise ValueError(f"pairs_per_event must be >= 1, got {pairs_per_event}")
    lo, hi = event_frames or (clip_frames * 3 // 8, clip_frames * 5 // 8)
    if not 1 <= lo <= hi <= clip_frames - 1:
        raise ValueError(
            f"event_frames=({lo}, {hi}) must satisfy 1 <= first <= last <= clip_frames - 1 = "
            f"{clip_frames - 1} so that both twins share a prefix and differ after it"
        )
    world = MovingDigits(split, canvas_size, clip_frames, digit_size, speed, random=False)
    if "wall" in events:
        _check_wall_fits(canvas_size, world.digit_size[1], wall_width, world.speed[1])
    num_digits = len(world._digit_pixels)
    config = {
        "pairs_per_event": int(pairs_per_event),
        "events": list(events),
        "clip_frames": int(clip_frames),
        "canvas_size": int(canvas_size),
        "digit_size": list(world.digit_size),
        "speed": list(world.speed),
        "event_frames": [int(lo), int(hi)],
        "split": split,
        "seed": int(seed),
        "wall_width": int(wall_width),
        "balanced": bool(balanced),
    }
    possible, impossible, names, frames, reverse = [], [], [], [], []
    for event in events:
        code = EVENTS.index(event)  # the seed of a pair names its event, not its position
        for i in range(pairs_per_event):
            traj = world._draw(torch.Generator().manual_seed(mix_seed(seed, code, i)))
            rng = np.random.default_rng(mix_seed(seed, code, i, 1))
            digit = int(rng.integers(num_digits))
            e = int(rng.integers(lo, hi + 1))
            pairs = _EVENT_MAKERS[event](world, traj, digit, e, rng, wall_width)
            for is_reverse, (pos, imp) in zip((False, True), pairs[: 1 + balanced], strict=False):
                possible.append(pos)
                impossible.append(imp)
                names.append(event)
                frames.append(e)
                reverse.append(is_reverse)
    return PhysicsBenchmark(
        np.stack(possible).astype(np.float32),
        np.stack(impossible).astype(np.float32),
        np.array(names),
        np.array(frames, dtype=np.int64),
        np.array(reverse, dtype=bool),
        config,
    )


def _check_wall_fits(canvas_size: int, max_digit: int, wall_width: int, max_speed: float) -> None:
    # The possible digit needs MIN_WALL_ROOM px to move in before the wall (as in training),
    # the impossible one as many beyond it to pass well through.
    need = max_digit + wall_width + 2 * MIN_WALL_ROOM
    if need > canvas_size:
        raise ValueError(
            f"a 'wall' event needs canvas_size >= max digit_size + wall_width + 2 * "
            f"MIN_WALL_ROOM = {need}, got canvas_size={canvas_size}; leave 'wall' out of "
            "events, or use smaller digits or a larger canvas"
        )
    check_wall_room(canvas_size, max_digit, wall_width, max_speed)


def _fold(x: np.ndarray, length: float) -> np.ndarray:
    """Elastic bounces in ``[0, length]``: reflect the free path ``x`` (as MovingDigits)."""
    y = np.mod(x, 2 * length)
    return np.where(y > length, 2 * length - y, y)


def _render(
    world: MovingDigits, digit: int, traj: Trajectory, positions=None, wall: Wall | None = None
) -> np.ndarray:
    """``(T, H, W)`` float32 frames in [0, 1] with the renderer of the training data."""
    if positions is not None:
        positions = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float32))
        traj = dataclasses.replace(traj, positions=positions)
    traj = dataclasses.replace(traj, wall=wall)
    return world._render(world._digit_pixels[digit], traj, 1.0, 0.0).numpy()


def _spliced(a: np.ndarray, b: np.ndarray, e: int):
    """The forward pair ``(A, A[:e] + B[e:])`` and the reverse pair ``(B, B[:e] + A[e:])``."""
    return (a, np.concatenate([a[:e], b[e:]])), (b, np.concatenate([b[:e], a[e:]]))


def _vanish(world, traj, digit, e, rng, wall_width):
    clip = _render(world, digit, traj)
    return _spliced(clip, np.zeros_like(clip), e)


def _colour(world, traj, digit, e, rng, wall_width):
    clip = _render(world, digit, traj)
    return _spliced(clip, clip * np.float32(rng.uniform(*COLOUR_FACTOR)), e)


def _shape(world, traj, digit, e, rng, wall_width):
    labels = world._digit_labels.numpy()
    other = int(rng.choice(np.flatnonzero(labels != labels[digit])))
    return _spliced(_render(world, digit, traj), _render(world, other, traj), e)


def _teleport(world, traj, digit, e, rng, wall_width):
    """B moves through a random point at ``e`` with A's velocity at ``e`` (so the forward
    digit jumps and moves on unchanged, the reverse one jumps back onto A's path)."""
    room = float(world.canvas_size - traj.digit_size)
    pos = traj.positions.numpy().astype(np.float64)  # (T, 2), the folded free path
    velocity = traj.speed * np.asarray(_DIRECTIONS[traj.direction])
    # Direction of travel at e: +v on the rising half of the fold's period, -v on the other.
    free = pos[0] + e * velocity
    velocity_e = np.where(np.mod(free, 2 * room) <= room, velocity, -velocity)
    while True:  # a jump of at least half the free room (rejection sampling, ~70% accepted)
        target = rng.uniform(0.0, room, size=2)
        if np.linalg.norm(target - pos[e]) >= room / 2:
            break
    steps = np.arange(len(pos))[:, None] - e
    other = _fold(target + steps * velocity_e, room)
    return _spliced(_render(world, digit, traj), _render(world, digit, traj, other), e)


def _wall(world, traj, digit, e, rng, wall_width):
    """A: a wall as the training data draws them (``MovingDigits(walls=...)``: the digit's
    room between border and wall an integer number of px, at least ``MIN_WALL_ROOM``) that
    also leaves ``MIN_WALL_ROOM`` px or more beyond it, so that the impossible digit can pass
    well through; perpendicular to an axis the digit moves along (columns unless the motion
    is vertical), on the side the digit moves to. The digit reaches it at ``t* = e - u``,
    ``u ~ U(0.25, 0.75)``, and bounces, so the twins differ from frame ``e`` on. B: no wall,
    the free path through the same point at ``t*``. The motions are spliced, the wall stays
    what it was (forward: drawn, reverse: absent). Built with the digit moving to +axis, then
    mirrored if it moves to -axis."""
    canvas, size = world.canvas_size, traj.digit_size
    room = float(canvas - size)
    velocity = np.asarray(_DIRECTIONS[traj.direction])
    axis = 1 if velocity[1] != 0 else 0
    along_speed = traj.speed * abs(float(velocity[axis]))
    most = canvas - wall_width - MIN_WALL_ROOM - size
    gap = int(rng.integers(MIN_WALL_ROOM, most + 1))  # the possible digit's room
    wall_at = size + gap  # first line of the wall: the digit's top-left stays in [0, gap]
    frame = np.arange(world.num_frames)
    free = gap + (frame - (e - rng.uniform(0.25, 0.75))) * along_speed
    bounced, through = _fold(free, gap), _fold(free, room)
    if velocity[axis] < 0:
        bounced, through = room - bounced, room - through
        wall_at = canvas - wall_at - wall_width
    wall = Wall(axis, wall_at, wall_width)
    pos = traj.positions.numpy().astype(np.float64)

    def render(along_before, along_after, scene):
        pos[:, axis] = np.where(frame < e, along_before, along_after)
        return _render(world, digit, traj, pos, scene)

    forward = render(bounced, bounced, wall), render(bounced, through, wall)
    reverse = render(through, through, None), render(through, bounced, None)
    return forward, reverse


_EVENT_MAKERS = {
    "vanish": _vanish,
    "teleport": _teleport,
    "wall": _wall,
    "colour": _colour,
    "shape": _shape,
}
