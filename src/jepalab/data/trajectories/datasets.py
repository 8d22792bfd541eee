"""The trajectory datasets: :class:`TrajectoryDataset` (``"trajectories"``) yields windows of
``num_frames`` frames with the actions between them (collated by
:func:`~jepalab.data.trajectories.collate.collate_trajectories`); :class:`TrajectoryFrames`
(``"trajectory_frames"``) yields every frame as an image sample, for I-JEPA pretraining and
probing on the same data. As for the other datasets, an unreadable file is logged (logger
``jepalab.data``), counted in ``num_corrupt``, and its sample is ``None``, dropped and counted
by the collator."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from jepalab.data.registry import register_dataset
from jepalab.data.trajectories.format import META_FILE, EpisodeFileError, read_meta
from jepalab.data.trajectories.reader import _read_arrays
from jepalab.data.trajectories.transforms import (
    _check_channels,
    _native_channels,
    _normalisation,
    frames_to_tensor,
)

logger = logging.getLogger("jepalab.data")

TEST_FRACTION = 0.1  # held-out share of episodes for TrajectoryFrames(episodes="test")


def split_episodes(num_episodes: int, episodes: Sequence[int] | str | None) -> list[int]:
    """Episode indices of a selection: ``None``/``"all"``, ``"train"`` (the first 90%),
    ``"test"`` (the last ``max(1, round(10%))``) or an explicit list."""
    if episodes is None or episodes == "all":
        return list(range(num_episodes))
    if isinstance(episodes, str):
        num_test = max(1, round(TEST_FRACTION * num_episodes))
        if episodes not in ("train", "test") or num_episodes < 2:
            raise ValueError(
                f"episodes={episodes!r}: use 'all', 'train', 'test' (train/test need at least 2 "
                f"episodes, there are {num_episodes}) or a list of episode indices."
            )
        cut = num_episodes - num_test
        return list(range(cut)) if episodes == "train" else list(range(cut, num_episodes))
    selected = [int(e) for e in episodes]
    bad = [e for e in selected if not 0 <= e < num_episodes]
    if bad or not selected:
        raise ValueError(
            f"episodes: indices {bad or selected} are not a non-empty selection of "
            f"range({num_episodes})."
        )
    return selected


@register_dataset("trajectories")
class TrajectoryDataset(Dataset):
    """Windows of ``num_frames`` frames, ``frame_skip`` apart, with the actions between them.

    Every window ``(episode e, start s)`` with ``s + (num_frames - 1) * frame_skip <= T_e - 1``
    is a sample, enumerated from ``meta.json`` alone (no episode file is opened here).

    Args:
        root: Trajectory dataset directory.
        num_frames: Frames per window.
        frame_skip: Stride between sampled frames.
        action_reduce: How the ``frame_skip`` underlying actions between two sampled frames
            become one: ``"sum"`` (``A' = A``; the net command for displacement actions) or
            ``"concat"`` (``A' = A * frame_skip``, in time order).
        mean: Normalisation mean (scalar or per channel) of frames scaled to ``[0, 1]``.
        std: Normalisation std (scalar or per channel).
        channels: Output channels: ``None`` as stored (grayscale -> 1), 1 from RGB (luma) or
            3 from grayscale (repeated).

    Samples are dicts ``{"frames": float32 (num_frames, C, H, W), "actions": float32
    (num_frames - 1, A'), "states": float32 (num_frames, S)}``, or ``None`` for an unreadable
    episode file (logged, counted in ``num_corrupt``, per process).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_frames: int = 8,
        frame_skip: int = 1,
        action_reduce: str = "sum",
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        channels: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.meta = read_meta(self.root)
        self.num_frames, self.frame_skip = int(num_frames), int(frame_skip)
        if self.num_frames < 1 or self.frame_skip < 1:
            raise ValueError(
                f"TrajectoryDataset: num_frames={num_frames} and frame_skip={frame_skip} must "
                "be positive."
            )
        if action_reduce not in ("sum", "concat"):
            raise ValueError(
                f"TrajectoryDataset: action_reduce={action_reduce!r}; use 'sum' or 'concat'."
            )
        self.action_reduce = action_reduce
        native = _native_channels(self.meta["frame_shape"])
        self.in_chans = _check_channels(channels, native, "TrajectoryDataset")
        self.mean, self.std = _normalisation(mean, std, self.in_chans, "TrajectoryDataset")
        self._episode, self._start = self._windows()
        self.num_corrupt = 0

    def _windows(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.asarray(self.meta["episode_lengths"], dtype=np.int64)
        span = (self.num_frames - 1) * self.frame_skip + 1
        counts = np.maximum(lengths - span + 1, 0)
        if counts.sum() == 0:
            raise ValueError(
                f"TrajectoryDataset: no episode of {self.root} is long enough for num_frames="
                f"{self.num_frames} with frame_skip={self.frame_skip} (a window spans {span} "
                f"frames; the longest episode has {int(lengths.max())}). Lower num_frames or "
                "frame_skip, or collect longer episodes."
            )
        episode = np.repeat(np.arange(len(lengths)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)  # first window of each episode
        return episode, np.arange(len(episode)) - first

    @property
    def action_dim(self) -> int:
        """``A'``: the action size after reduction."""
        a = int(self.meta["action_dim"])
        return a * self.frame_skip if self.action_reduce == "concat" else a

    @property
    def state_dim(self) -> int:
        return int(self.meta["state_dim"])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Stored frame shape ``(H, W)`` or ``(H, W, C)``."""
        return tuple(self.meta["frame_shape"])

    def __len__(self) -> int:
        return len(self._episode)

    def window(self, index: int) -> tuple[int, int]:
        """``(episode, start frame)`` of sample ``index``."""
        return int(self._episode[index]), int(self._start[index])

    def __getitem__(self, index: int) -> dict[str, Tensor] | None:
        episode, start = self.window(index)
        frame_ids = start + self.frame_skip * np.arange(self.num_frames)
        try:
            arrays = _read_arrays(self.root, self.meta, episode, frames=frame_ids)
        except EpisodeFileError as exc:
            self.num_corrupt += 1
            logger.warning("TrajectoryDataset: skipping window %d (%s)", index, exc)
            return None
        steps = (self.num_frames - 1) * self.frame_skip
        actions = arrays["actions"][start : start + steps]
        actions = actions.reshape(self.num_frames - 1, self.frame_skip, self.meta["action_dim"])
        if self.action_reduce == "sum":
            actions = actions.sum(axis=1, dtype=np.float32)
        else:
            actions = actions.reshape(self.num_frames - 1, self.action_dim)
        return {
            "frames": frames_to_tensor(arrays["frames"], self.in_chans, self.mean, self.std),
            "actions": torch.from_numpy(np.ascontiguousarray(actions)),
            "states": torch.from_numpy(arrays["states"][frame_ids]),
        }


@register_dataset("trajectory_frames")
class TrajectoryFrames(Dataset):
    """Every frame of the selected episodes as an image sample ``(image, label)``.

    For I-JEPA pretraining and probing on the frames a world model sees.

    Args:
        root: Trajectory dataset directory.
        mean: Normalisation mean (scalar or per channel) of frames scaled to ``[0, 1]``.
        std: Normalisation std (scalar or per channel).
        label: ``"none"`` (-1) or ``"position_cell"``: the first two state dimensions
            ``(x, y)`` binned on a ``label_bins x label_bins`` grid spanning
            ``meta["state_low"]..meta["state_high"]``; class ``row * label_bins + col`` with
            ``x`` the column and ``y`` the row.
        label_bins: Grid cells per side for ``"position_cell"``.
        episodes: ``None``/``"all"``, ``"train"`` (first 90% of episodes), ``"test"`` (last
            10%) or a list of episode indices, so that a probe can test on held-out episodes.
        channels: Output channels, as in :class:`TrajectoryDataset`.
        frame_stride: keep every ``frame_stride``-th frame of each episode (consecutive
            frames are nearly identical; a probe needs far fewer of them).

    Samples are ``(image float32 (C, H, W), label)``, or ``None`` for an unreadable episode
    file (logged, counted in ``num_corrupt``). The last episode read is cached (per DataLoader
    worker), so sequential access opens each file once.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        label: str = "none",
        label_bins: int = 4,
        episodes: Sequence[int] | str | None = None,
        channels: int | None = None,
        frame_stride: int = 1,
    ) -> None:
        if frame_stride < 1:
            raise ValueError(f"TrajectoryFrames: frame_stride={frame_stride} must be >= 1.")
        self.frame_stride = int(frame_stride)
        self.root = Path(root).expanduser()
        self.meta = read_meta(self.root)
        self.label, self.label_bins = label, int(label_bins)
        self._check_label()
        self.num_classes = self.label_bins**2 if label == "position_cell" else 0
        native = _native_channels(self.meta["frame_shape"])
        self.in_chans = _check_channels(channels, native, "TrajectoryFrames")
        self.mean, self.std = _normalisation(mean, std, self.in_chans, "TrajectoryFrames")
        self.episodes = split_episodes(self.meta["num_episodes"], episodes)
        lengths = np.asarray(self.meta["episode_lengths"], dtype=np.int64)[self.episodes]
        lengths = (lengths + self.frame_stride - 1) // self.frame_stride
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._labels: Tensor | None = None
        self._cache: tuple[int, dict[str, Any]] | None = None
        self.num_corrupt = 0

    def _check_label(self) -> None:
        if self.label not in ("none", "position_cell"):
            raise ValueError(
                f"TrajectoryFrames: label={self.label!r}; use 'none' or 'position_cell'."
            )
        if self.label_bins < 1:
            raise ValueError(f"TrajectoryFrames: label_bins={self.label_bins} must be positive.")
        if self.label == "position_cell" and (
            self.meta["state_dim"] < 2 or len(self.meta.get("state_low") or []) < 2
        ):
            raise ValueError(
                f"TrajectoryFrames: label='position_cell' needs states with at least 2 "
                f"dimensions and state_low/state_high in {self.root / META_FILE} (state_dim="
                f"{self.meta['state_dim']}); write the dataset with write_episodes and states."
            )

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}  # do not ship a cached episode to workers

    def position_cells(self, states: np.ndarray) -> np.ndarray:
        """int64 ``(N,)`` grid cell of states ``(N, S)``: ``row * bins + col``."""
        low = np.asarray(self.meta["state_low"][:2], dtype=np.float64)
        high = np.asarray(self.meta["state_high"][:2], dtype=np.float64)
        fraction = (states[:, :2] - low) / np.maximum(high - low, 1e-12)
        cell = np.clip(np.floor(fraction * self.label_bins), 0, self.label_bins - 1)
        cell = cell.astype(np.int64)
        return cell[:, 1] * self.label_bins + cell[:, 0]

    @property
    def labels(self) -> Tensor:
        """LongTensor ``(len,)`` of all labels (reads every selected episode's states once)."""
        if self._labels is None:
            if self.label == "none":
                self._labels = torch.full((len(self),), -1, dtype=torch.long)
            else:
                cells = [
                    self.position_cells(
                        _read_arrays(self.root, self.meta, e, frames=False)["states"][
                            :: self.frame_stride
                        ]
                    )
                    for e in self.episodes
                ]
                self._labels = torch.from_numpy(np.concatenate(cells))
        return self._labels.clone()

    def locate(self, index: int) -> tuple[int, int]:
        """``(episode, frame)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"TrajectoryFrames: index {index} out of range({len(self)}).")
        slot = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self.episodes[slot], (index - int(self._offsets[slot])) * self.frame_stride

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        episode, frame = self.locate(index)
        if self._cache is None or self._cache[0] != episode:
            try:
                self._cache = episode, _read_arrays(self.root, self.meta, episode)
            except EpisodeFileError as exc:
                self.num_corrupt += 1
                logger.warning("TrajectoryFrames: skipping frame %d (%s)", index, exc)
                return None
        arrays = self._cache[1]
        image = frames_to_tensor(
            arrays["frames"][frame : frame + 1], self.in_chans, self.mean, self.std
        )
        label = -1
        if self.label == "position_cell":
            label = int(self.position_cells(arrays["states"][frame : frame + 1])[0])
        return image[0], label
