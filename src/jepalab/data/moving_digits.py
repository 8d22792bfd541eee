"""MovingDigits: the embedded default video dataset (real handwritten digits in motion).

Each clip shows one scikit-learn handwritten digit (the source digits and the stratified
train/test split of :class:`~jepalab.data.DigitsCanvas`, so the splits never share a digit),
upscaled to a random side and moving at constant velocity on a black canvas, bouncing
elastically off the borders. In the spirit of Moving MNIST [0], but with labels that a single
frame cannot predict:

* ``"direction"`` (8 classes): the initial direction of motion. Angles are drawn exactly as
  ``k * 45`` degrees, counter-clockwise from east as seen on screen (0 E, 1 NE, 2 N, 3 NW, 4 W,
  5 SW, 6 S, 7 SE; rows grow downward, so north moves to smaller row indices). The start
  position is uniform and independent of ``k``, so frame 0 carries no direction information.
* ``"speed"`` (3 classes): the speed (px/frame, along the direction) in three equal bins of the
  ``speed`` range.
* ``"bounces"`` (3 classes): bounces off the borders (and the wall, if any) during the clip
  (a corner counts twice), clipped to 2.
* ``"digit"`` (10 classes): the digit class, the static baseline.

With ``walls > 0``, that fraction of clips also has a :class:`Wall`: a grey bar across the
canvas that the digit bounces off exactly as off the borders (it stays on its side, with at
least :data:`MIN_WALL_ROOM` px to move in). This is the world of the intuitive-physics
benchmark's ``wall`` event (:mod:`jepalab.data.physics`), where a model must know that the bar
is solid -- as IntPhys's pretraining videos contain the objects of its test.

Positions are continuous; a digit at a sub-pixel position is rendered by bilinear placement
(the hat-function weights of linear interpolation), so slow digits move smoothly and the
intensity centroid moves exactly with the digit. All frames of a clip are rendered together
by a few batched matrix products (about 5,000 clips/s on one CPU core with the defaults).
:func:`export_mp4` writes clips as H.264 files plus a list file, to train through
:class:`~jepalab.data.VideoDataset` exactly as on real videos.

[0] Srivastava et al. 2015, "Unsupervised Learning of Video Representations using LSTMs".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from jepalab.data.digits import load_digit_split
from jepalab.data.registry import register_dataset
from jepalab.data.sampling import mix_seed

# Normalisation constants for frame intensities in [0, 1]. Obtained with the default arguments
# (canvas_size=32, num_frames=8, digit_size=(10, 14), speed=(1, 3)): split="all", 10 passes of
# random clips over all 1,797 digits after torch.manual_seed(0), i.e. 17,970 clips; mean and
# std over every pixel of every frame, rounded to 4 decimals. Fixed (not recomputed for other
# arguments) so that a checkpoint's input statistics never depend on dataset arguments.
MOVING_DIGITS_MEAN = 0.0436
MOVING_DIGITS_STD = 0.1553

# decord 0.6 cannot read H.264 frames of these widths (its "DECORDArrayCopyFromTo: The size
# must exactly match" check fails; measured over the even widths 8..258), so export_mp4
# upsamples past them to keep its files readable by VideoDataset.
_DECORD_UNREADABLE_WIDTHS = frozenset({8, 12, 16, 24, 48, 72})

LABELS: dict[str, int] = {"direction": 8, "speed": 3, "bounces": 3, "digit": 10}
MAX_BOUNCES = 2

WALL_INTENSITY = 0.5  # grey level of a wall; a digit is drawn over it (its ink as opacity)
# px of motion a digit keeps between the border and a wall: a digit pressed into a narrow gap
# rattles back and forth, a motion seen nowhere else in the data.
MIN_WALL_ROOM = 8

_S = math.sqrt(0.5)
# (row, col) unit velocity of direction k, exact zeros on the axes (no spurious bounces).
_DIRECTIONS = ((0, 1), (-_S, _S), (-1, 0), (-_S, -_S), (0, -1), (_S, -_S), (1, 0), (_S, _S))


@dataclass(frozen=True)
class Wall:
    """A solid bar across the canvas.

    Attributes:
        axis: 0 a horizontal bar (rows ``start .. start + width - 1``), 1 a vertical bar
            (columns); the digit bounces off it along that axis.
        start: First row (column) of the bar.
        width: Thickness in pixels.
    """

    axis: int
    start: int
    width: int

    def pixels(self, canvas_size: int) -> np.ndarray:
        """``(H, W)`` float32 image of the bar alone: :data:`WALL_INTENSITY` on it, else 0."""
        image = np.zeros((canvas_size, canvas_size), dtype=np.float32)
        bar = slice(self.start, self.start + self.width)
        image[(bar, slice(None)) if self.axis == 0 else (slice(None), bar)] = WALL_INTENSITY
        return image


@dataclass(frozen=True)
class Trajectory:
    """The motion of one clip.

    Attributes:
        digit_size: Side of the upscaled digit in pixels.
        direction: ``k`` of the initial direction ``k * 45`` degrees (see the module docstring).
        speed: Pixels per frame along the direction.
        positions: float32 ``(T, 2)`` ``(row, col)`` of the digit's top-left corner per frame,
            in ``[0, canvas_size - digit_size]`` (and on its side of the wall).
        bounces: Bounces off the borders and the wall during the clip (not clipped).
        wall: The clip's wall, if any.
    """

    digit_size: int
    direction: int
    speed: float
    positions: Tensor
    bounces: int
    wall: Wall | None = None


@register_dataset("moving_digits")
class MovingDigits(Dataset):
    """Handwritten sklearn digits moving and bouncing in a square canvas.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` source digits (as :class:`DigitsCanvas`).
        canvas_size: Side of the square frames in pixels.
        num_frames: Frames per clip.
        digit_size: Inclusive ``(min, max)`` side of the upscaled digit in pixels.
        speed: ``(min, max)`` speed in pixels per frame, drawn uniformly.
        label: Target of each clip: ``"direction"``, ``"speed"``, ``"bounces"`` or ``"digit"``.
        random: If True (training), every access draws a fresh clip from the global torch RNG.
            If False, index ``i`` always renders the same clip, drawn from a generator seeded
            with ``(render_seed, i)``: identical in every process and call order.
        render_seed: Seed of the fixed clips used when ``random`` is False.
        samples_per_digit: Clips per source digit; ``len = num_digits * samples_per_digit``
            (index ``i`` shows digit ``i % num_digits``), so fixed probe sets can be larger
            than the digit set.
        test_fraction: Fraction of the source digits in the test split.
        split_seed: Seed of the train/test split.
        walls: Fraction of clips with a :class:`Wall` (0: none, the default). Its axis, side
            and position are uniform, the digit's room between border and wall an integer in
            ``[MIN_WALL_ROOM, canvas_size - wall_width - 1 - digit size]``.
        wall_width: Thickness of the walls in pixels.

    Attributes:
        num_classes: Classes of ``label`` (8, 3, 3 or 10).
        in_chans: 1.
        image_size: ``canvas_size``.
        num_frames: Frames per clip.
        source_indices: LongTensor ``(len,)``, index of each sample's digit in ``load_digits()``.

    Samples are ``(clip, label)`` with ``clip`` float32 ``(1, num_frames, canvas_size,
    canvas_size)`` normalised with ``(x - MOVING_DIGITS_MEAN) / MOVING_DIGITS_STD``.
    """

    in_chans: int = 1

    def __init__(
        self,
        split: str = "train",
        canvas_size: int = 32,
        num_frames: int = 8,
        digit_size: tuple[int, int] = (10, 14),
        speed: tuple[float, float] = (1.0, 3.0),
        label: str = "direction",
        random: bool = True,
        render_seed: int = 0,
        samples_per_digit: int = 1,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        walls: float = 0.0,
        wall_width: int = 2,
    ) -> None:
        self.split = split
        self.canvas_size = self.image_size = int(canvas_size)
        self.num_frames = int(num_frames)
        self.digit_size = (int(digit_size[0]), int(digit_size[-1]))
        self.speed = (float(speed[0]), float(speed[-1]))
        self.label = label
        self.random = bool(random)
        self.render_seed = int(render_seed)
        self.samples_per_digit = int(samples_per_digit)
        self.test_fraction, self.split_seed = float(test_fraction), int(split_seed)
        self.walls, self.wall_width = float(walls), int(wall_width)
        self._validate(len(digit_size), len(speed))
        self.num_classes = LABELS[label]

        self._digits, self._digit_labels, source = load_digit_split(
            split, test_fraction, split_seed
        )
        self.source_indices = source.repeat(self.samples_per_digit)
        self._build_render_tables()

    def _build_render_tables(self) -> None:
        """Per digit size ``s``, built once: ``upscale[s]`` ``(s, 8)`` is bilinear 8 -> s
        upscaling as a matrix (``U @ digit @ U.T == F.interpolate(digit, (s, s), "bilinear")``)
        and ``offsets[s]`` ``(H, s)`` is canvas pixel minus digit pixel.

        Rendering runs in numpy: its tiny matrix products stay single-threaded, whereas torch's
        go through OpenMP and slow down ~100x when the CPU is oversubscribed (e.g. a dataset
        read with num_workers=0 beside a training step on a busy machine).
        """
        self._digit_pixels = self._digits.numpy()  # (N, 8, 8) float32
        eye = torch.eye(8)[None]
        grid = np.arange(self.canvas_size, dtype=np.float32)
        self._upscale: dict[int, np.ndarray] = {}
        self._offsets: dict[int, np.ndarray] = {}
        for size in range(self.digit_size[0], self.digit_size[1] + 1):
            up = F.interpolate(eye, size=size, mode="linear", align_corners=False)  # (1, 8, s)
            self._upscale[size] = np.ascontiguousarray(up[0].T.numpy())
            self._offsets[size] = grid[:, None] - np.arange(size, dtype=np.float32)

    def _validate(self, size_len: int, speed_len: int) -> None:
        name = "MovingDigits"
        if self.label not in LABELS:
            raise ValueError(f"{name}: unknown label {self.label!r}; use one of {list(LABELS)}.")
        if size_len != 2 or not 1 <= self.digit_size[0] <= self.digit_size[1]:
            raise ValueError(f"{name}: digit_size={self.digit_size} must satisfy 1 <= min <= max.")
        room = self.canvas_size - self.digit_size[1]
        if room < 1:
            raise ValueError(
                f"{name}: digit_size max {self.digit_size[1]} leaves no room to move on a "
                f"{self.canvas_size}px canvas; lower digit_size or raise canvas_size."
            )
        lo, hi = self.speed
        if speed_len != 2 or not 0.0 < lo <= hi:
            raise ValueError(f"{name}: speed={self.speed} must satisfy 0 < min <= max.")
        if hi > room:
            raise ValueError(
                f"{name}: speed max {hi} px/frame exceeds the {room}px a digit of size "
                f"{self.digit_size[1]} can travel on a {self.canvas_size}px canvas; the motion "
                "would alias. Lower speed or digit_size."
            )
        if self.label == "speed" and lo == hi:
            raise ValueError(f"{name}: label='speed' needs a speed range, got speed={self.speed}.")
        if self.num_frames < 2:
            raise ValueError(f"{name}: num_frames must be >= 2 to show motion.")
        if self.samples_per_digit < 1:
            raise ValueError(f"{name}: samples_per_digit must be >= 1.")
        if not 0.0 <= self.walls <= 1.0:
            raise ValueError(f"{name}: walls={self.walls} is a fraction of clips, in [0, 1].")
        if self.walls > 0:
            check_wall_room(self.canvas_size, self.digit_size[1], self.wall_width, hi)

    def __len__(self) -> int:
        return len(self._digits) * self.samples_per_digit

    @property
    def labels(self) -> Tensor:
        """LongTensor ``(len,)`` of all labels (fixed clips, or ``label="digit"``, only)."""
        if self.label == "digit":
            return self._digit_labels.repeat(self.samples_per_digit)
        if self.random:
            raise RuntimeError(
                f"MovingDigits(label={self.label!r}, random=True) draws a new clip, and so a new "
                "label, on every access; use random=False for a fixed labelled set."
            )
        return torch.tensor([self._label(i, self.trajectory(i)) for i in range(len(self))])

    def trajectory(self, index: int) -> Trajectory:
        """The fixed trajectory of ``index`` (the one rendered when ``random`` is False)."""
        # A fresh generator per index: independent of access order, global RNG and process.
        return self._draw(torch.Generator().manual_seed(mix_seed(self.render_seed, index)))

    def _draw(self, gen: torch.Generator | None) -> Trajectory:
        # One RNG call per clip: size, start row, start col, direction, speed (and a second
        # one for the wall only when walls > 0, so wall-free clips are what they always were).
        u = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
        lo, hi = self.digit_size
        size = min(lo + int(u[0] * (hi - lo + 1)), hi)
        direction = min(int(u[3] * 8), 7)
        v_lo, v_hi = self.speed
        speed = v_lo + (v_hi - v_lo) * u[4]
        wall, wall_range = self._draw_wall(gen, size) if self.walls > 0 else (None, None)
        # Elastic bounces == reflecting the free path start + t * v into the top-left range
        # [low, low + room] that keeps the digit inside (a triangle wave of period 2 * room);
        # each crossing of a multiple of room is one bounce.
        positions, bounces = [], 0
        for axis, unit in enumerate(_DIRECTIONS[direction]):
            low, room = 0.0, float(self.canvas_size - size)
            if wall is not None and wall.axis == axis:
                low, room = wall_range
            start = u[1 + axis] * room
            free = [start + t * speed * unit for t in range(self.num_frames)]
            folded = [x % (2 * room) for x in free]
            positions.append([low + (2 * room - x if x > room else x) for x in folded])
            bounces += abs(math.floor(free[-1] / room) - math.floor(free[0] / room))
        positions_t = torch.from_numpy(np.array(positions, dtype=np.float32).T.copy())
        return Trajectory(size, direction, speed, positions_t, bounces, wall)

    def _draw_wall(
        self, gen: torch.Generator | None, size: int
    ) -> tuple[Wall | None, tuple[float, float] | None]:
        """With probability ``walls``, a wall and the ``(low, room)`` top-left range it leaves
        the digit along its axis: presence, axis, side, room (one RNG call)."""
        w = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        if w[0] >= self.walls:
            return None, None
        axis = int(w[1] * 2)
        most = self.canvas_size - self.wall_width - 1 - size  # leave >= 1 px beyond the wall
        room = min(MIN_WALL_ROOM + int(w[3] * (most - MIN_WALL_ROOM + 1)), most)
        if w[2] < 0.5:  # the digit on the low side: [0, room], the wall just after it
            return Wall(axis, size + room, self.wall_width), (0.0, float(room))
        low = self.canvas_size - size - room  # mirrored: the high side
        return Wall(axis, low - self.wall_width, self.wall_width), (float(low), float(room))

    def _label(self, index: int, traj: Trajectory) -> int:
        if self.label == "direction":
            return traj.direction
        if self.label == "speed":
            lo, hi = self.speed
            return min(int((traj.speed - lo) / (hi - lo) * 3), 2)
        if self.label == "bounces":
            return min(traj.bounces, MAX_BOUNCES)
        return int(self._digit_labels[index % len(self._digits)])

    def _render(self, digit: np.ndarray, traj: Trajectory, scale: float, shift: float) -> Tensor:
        """``scale * frames + shift``, ``frames`` ``(T, H, W)`` in ``[0, 1]`` of ``digit``."""
        size = traj.digit_size
        # Bilinear placement at a sub-pixel offset p: digit pixel r lands on canvas pixel i with
        # weight max(0, 1 - |i - r - p|), separably in rows and columns; the weights of a pixel
        # sum to at most 1, so values stay in [0, 1] and the intensity centroid moves by p.
        hat = self._offsets[size] - traj.positions.numpy().T[:, :, None, None]  # (2, T, H, s)
        np.abs(hat, out=hat)
        np.subtract(1.0, hat, out=hat)
        np.maximum(hat, 0.0, out=hat)
        rows, cols = hat @ self._upscale[size]  # (T, H, 8) each
        if traj.wall is None:
            frames = (rows @ (digit * np.float32(scale))) @ cols.transpose(0, 2, 1)  # (T, H, W)
        else:  # the digit over the wall, its ink as opacity: ink + wall * (1 - ink)
            frames = (rows @ digit) @ cols.transpose(0, 2, 1)
            frames += traj.wall.pixels(self.canvas_size) * (1 - frames)
            frames *= np.float32(scale)
        frames += np.float32(shift)
        return torch.from_numpy(frames)

    def _sample(self, index: int, normalise: bool = False) -> tuple[Tensor, int]:
        """``(frames (T, H, W), label)``; frames in ``[0, 1]`` or normalised."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"MovingDigits index {index} out of range for length {n}.")
        index %= n
        traj = self._draw(None) if self.random else self.trajectory(index)
        scale, shift = (1 / MOVING_DIGITS_STD, -MOVING_DIGITS_MEAN / MOVING_DIGITS_STD)
        if not normalise:
            scale, shift = 1.0, 0.0
        digit = self._digit_pixels[index % len(self._digits)]
        frames = self._render(digit, traj, scale, shift)
        return frames, self._label(index, traj)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Render one clip.

        Args:
            index: Sample index in ``[0, len)`` (negative indices count from the end).

        Returns:
            ``(clip, label)``: float32 ``(1, num_frames, canvas_size, canvas_size)`` clip
            normalised with ``(x - MOVING_DIGITS_MEAN) / MOVING_DIGITS_STD``, and its label.
        """
        frames, label = self._sample(index, normalise=True)
        return frames[None], label

    def config(self) -> dict[str, Any]:
        """The constructor arguments (what determines the rendered clips)."""
        keys = ("split", "canvas_size", "num_frames", "digit_size", "speed", "label", "random")
        keys += ("render_seed", "samples_per_digit", "test_fraction", "split_seed")
        keys += ("walls", "wall_width")
        return {key: getattr(self, key) for key in keys}


def check_wall_room(canvas_size: int, max_digit: int, wall_width: int, max_speed: float) -> None:
    """Raise unless a digit of every size has :data:`MIN_WALL_ROOM` px to move in beside a wall
    of ``wall_width`` px (with 1 px beyond it), and the fastest one cannot skip that room."""
    need = max_digit + MIN_WALL_ROOM + wall_width + 1
    if need > canvas_size:
        raise ValueError(
            f"a wall needs canvas_size >= max digit_size + {MIN_WALL_ROOM} (MIN_WALL_ROOM) + "
            f"wall_width + 1 = {need}, got canvas_size={canvas_size}; use no walls, smaller "
            "digits, a thinner wall or a larger canvas"
        )
    if max_speed > MIN_WALL_ROOM:
        raise ValueError(
            f"speed max {max_speed} px/frame exceeds the {MIN_WALL_ROOM} px room beside a wall; "
            "the motion would alias. Lower speed or use no walls."
        )


def export_mp4(
    dataset: MovingDigits, out_dir: str | os.PathLike[str], count: int | None = None, fps: int = 10
) -> Path:
    """Render clips to H.264 files and a :class:`~jepalab.data.VideoDataset` list file.

    Writes ``out_dir/<split>/<index:05d>.mp4`` (yuv420p; frames are upsampled 2x, nearest
    neighbour, until their size is even, which H.264 4:2:0 needs, and their width is one decord
    can read) and ``out_dir/<split>.csv`` with one ``path label`` line
    per clip, paths relative to ``out_dir``. Cached: if the list already has ``count`` lines,
    its videos exist and ``out_dir/<split>.json`` records the same dataset arguments, nothing is
    rendered. Use ``random=False`` for a reproducible export.

    Args:
        dataset: The clips to export.
        out_dir: Output folder (created if needed).
        count: Number of clips (indices ``0..count-1``); default all.
        fps: Frame rate stored in the files.

    Returns:
        Path of the list file, for ``VideoDataset(source=...)``.
    """
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            "export_mp4 needs PyAV to write H.264 files: `pip install av` "
            "(or `pip install jepalab[dev]`)."
        ) from exc
    count = len(dataset) if count is None else int(count)
    if not 1 <= count <= len(dataset):
        raise ValueError(f"export_mp4: count must be in [1, {len(dataset)}], got {count}.")
    out_dir = Path(out_dir).expanduser()
    list_file, meta_file = out_dir / f"{dataset.split}.csv", out_dir / f"{dataset.split}.json"
    meta = json.dumps({"dataset": dataset.config(), "count": count, "fps": fps}, sort_keys=True)
    names = [f"{dataset.split}/{i:05d}.mp4" for i in range(count)]
    if _export_is_cached(list_file, meta_file, meta, out_dir, names):
        return list_file

    (out_dir / dataset.split).mkdir(parents=True, exist_ok=True)
    lines = []
    for i, name in enumerate(names):
        frames, label = dataset._sample(i)
        _write_mp4(av, out_dir / name, frames, fps)
        lines.append(f"{name} {label}\n")
    meta_file.write_text(meta)
    # Written last and atomically: an interrupted export never looks like a finished one.
    tmp = list_file.with_suffix(".csv.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, list_file)
    return list_file


def _export_is_cached(
    list_file: Path, meta_file: Path, meta: str, out_dir: Path, names: list[str]
) -> bool:
    if not (list_file.is_file() and meta_file.is_file()) or meta_file.read_text() != meta:
        return False
    listed = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    return listed == names and all((out_dir / name).is_file() for name in names)


def _write_mp4(av: Any, path: Path, frames: Tensor, fps: int) -> None:
    """Encode ``frames`` ``(T, H, W)`` in ``[0, 1]`` as H.264 yuv420p."""
    pixels = (frames * 255).round_().clamp_(0, 255).to(torch.uint8)
    height, width = pixels.shape[-2:]
    while height % 2 or width % 2 or width in _DECORD_UNREADABLE_WIDTHS:
        pixels = pixels.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
        height, width = pixels.shape[-2:]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = pixels.shape[-2:]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}  # near-lossless: the round trip stays faithful
        for frame in pixels.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        container.mux(stream.encode())  # flush
