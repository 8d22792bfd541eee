"""On-disk episodes for action-conditioned world models: the format, its reader and writer, and
the datasets that sample it.

A trajectory dataset is a directory (full description and rationale in ``docs/trajectories.md``)::

    root/
      meta.json                  written last: a directory without it is an incomplete write
      episodes/episode_000000.npz
      episodes/episode_000001.npz
      ...

``meta.json`` holds ``format`` (``"jepalab.trajectories/1"``), ``num_episodes``,
``episode_lengths`` (frames per episode), ``action_dim``, ``state_dim``, ``frame_shape``
(``[H, W]`` or ``[H, W, C]``), ``fps`` (or null), ``action_low``/``action_high`` (or null),
``state_low``/``state_high`` (per-dimension min/max over all states) and ``source`` (free-form,
e.g. the environment, its config and the seed).

Each episode file of ``T`` frames holds ``actions`` float32 ``(T-1, A)`` (action ``t`` is
applied at frame ``t`` and leads to frame ``t+1``), ``states`` float32 ``(T, S)``
(proprioception per frame; ``S`` may be 0), and either ``frames`` uint8 ``(T, H, W)`` /
``(T, H, W, C)`` or ``video``, a 0-d string array naming an mp4 (relative to ``root``) of ``T``
frames decoded with decord. Optional: ``goal_frame`` (uint8, one frame) and ``goal_state``
``(S,)``.

Why ``.npz``: numpy-native (no extra dependency; h5py is not among ours), every file is
self-describing (``np.load(f).files``), one file per episode makes collection appendable and
lets DataLoader workers open files independently, without HDF5's fork and locking pitfalls.
Long real videos stay mp4 files, referenced by ``video``.

Datasets: :class:`TrajectoryDataset` (``"trajectories"``) yields windows of ``num_frames``
frames with the actions between them, collated into a :class:`TrajectoryBatch` by
:func:`collate_trajectories`; :class:`TrajectoryFrames` (``"trajectory_frames"``) yields every
frame as an image sample, for I-JEPA pretraining and probing on the same data. As for the other
datasets, an unreadable file is logged (logger ``jepalab.data``), counted in ``num_corrupt``,
and its sample is ``None``, dropped and counted by the collator.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from jepalab.data.collate import readable_samples
from jepalab.data.sampling import SampleKey
from jepalab.data.video import _import_decord

logger = logging.getLogger("jepalab.data")

TRAJECTORY_FORMAT = "jepalab.trajectories/1"
META_FILE = "meta.json"
EPISODES_DIR = "episodes"
TEST_FRACTION = 0.1  # held-out share of episodes for TrajectoryFrames(episodes="test")

_META_KEYS = ("num_episodes", "episode_lengths", "action_dim", "state_dim", "frame_shape")
# What a broken .npz raises: truncated or garbage files (BadZipFile, ValueError from np.load's
# format sniffing, EOFError), corrupt compressed members (zlib.error), unreadable files (OSError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class EpisodeFileError(ValueError):
    """An episode file is missing, unreadable, or disagrees with ``meta.json``; the message
    names the file (and the key)."""


@dataclass
class Episode:
    """One episode in memory.

    Attributes:
        frames: uint8 ``(T, H, W)`` or ``(T, H, W, C)``; ``None`` for a video-backed episode.
        actions: float ``(T-1, A)``; action ``t`` leads from frame ``t`` to frame ``t+1``.
        states: float ``(T, S)`` or ``None`` (stored as ``(T, 0)``, read back as such).
        goal_frame: Optional uint8 frame ``(H, W[, C])``.
        goal_state: Optional float ``(S,)``.
        video: Path of an mp4 of ``T`` frames, relative to the dataset directory, instead of
            ``frames`` (the file must be there when the episode is written).
    """

    frames: np.ndarray | None
    actions: np.ndarray
    states: np.ndarray | None = None
    goal_frame: np.ndarray | None = None
    goal_state: np.ndarray | None = None
    video: str | None = None


def episode_path(root: str | os.PathLike[str], index: int) -> Path:
    """``root/episodes/episode_{index:06d}.npz``."""
    return Path(root) / EPISODES_DIR / f"episode_{index:06d}.npz"


# -- writing -------------------------------------------------------------------------------------


def write_episodes(
    root: str | os.PathLike[str],
    episodes: Iterable[Episode],
    *,
    fps: float | None = None,
    action_low: Sequence[float] | None = None,
    action_high: Sequence[float] | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
    compress: bool = True,
) -> Path:
    """Validate and write episodes as a trajectory dataset (format in the module docstring).

    Episodes are consumed one at a time (a generator never needs to hold them all). Each file
    is written atomically (temporary file + ``os.replace``) and ``meta.json`` last, so an
    interrupted write leaves a directory that :func:`read_meta` rejects as incomplete.

    Args:
        root: Dataset directory (created if needed).
        episodes: The episodes, in order; their frame shape, action and state sizes must agree.
        fps: Frame rate of the recording, or ``None`` (simulations).
        action_low: Per-dimension lower bound of the actions ``(A,)``, or ``None``.
        action_high: Per-dimension upper bound of the actions ``(A,)``, or ``None``.
        source: Free-form JSON-serialisable description (environment, config, seed, ...).
        overwrite: Replace an existing dataset (its ``meta.json`` and ``episodes/``) in ``root``.
        compress: zlib-compress the arrays (``np.savez_compressed``); rendered frames shrink
            about 10x.

    Returns:
        ``root`` as a ``Path``.

    Raises:
        FileExistsError: If ``root`` already holds a (possibly incomplete) dataset and not
            ``overwrite``.
        ValueError: If an episode is invalid (names the episode index and the key), there are
            no episodes, or the bounds do not have ``A`` values.
    """
    root = Path(root).expanduser()
    _prepare_root(root, overwrite)
    lengths: list[int] = []
    dims: tuple[tuple[int, ...], int, int] | None = None
    state_low: np.ndarray | None = None
    state_high: np.ndarray | None = None
    for index, episode in enumerate(episodes):
        arrays, episode_dims = _episode_arrays(root, index, episode)
        if dims is None:
            dims = episode_dims
        _check_same_dims(index, episode_dims, dims)
        _save_npz(episode_path(root, index), arrays, compress)
        states = arrays["states"]
        lengths.append(len(states))
        low, high = states.min(axis=0), states.max(axis=0)
        state_low = low if state_low is None else np.minimum(state_low, low)
        state_high = high if state_high is None else np.maximum(state_high, high)
    if dims is None:
        raise ValueError(f"write_episodes: no episodes to write to {root}.")
    frame_shape, action_dim, state_dim = dims
    meta = {
        "format": TRAJECTORY_FORMAT,
        "num_episodes": len(lengths),
        "episode_lengths": lengths,
        "action_dim": action_dim,
        "state_dim": state_dim,
        "frame_shape": list(frame_shape),
        "fps": None if fps is None else _positive(fps, "fps"),
        "action_low": _bound(action_low, action_dim, "action_low"),
        "action_high": _bound(action_high, action_dim, "action_high"),
        "state_low": [float(v) for v in state_low],  # type: ignore[union-attr]
        "state_high": [float(v) for v in state_high],  # type: ignore[union-attr]
        "source": dict(source or {}),
    }
    _write_text_atomic(root / META_FILE, json.dumps(meta, indent=1) + "\n")
    return root


def from_arrays(
    root: str | os.PathLike[str],
    frames: np.ndarray | Sequence[np.ndarray],
    actions: np.ndarray | Sequence[np.ndarray],
    states: np.ndarray | Sequence[np.ndarray] | None = None,
    **kwargs: Any,
) -> Path:
    """Write plain arrays as a trajectory dataset.

    Args:
        root: Dataset directory.
        frames: uint8 ``(E, T, H, W[, C])``, or a list of ``E`` arrays ``(T_e, H, W[, C])``.
        actions: ``(E, T-1, A)``, or a list of ``(T_e - 1, A)``.
        states: ``(E, T, S)``, a list of ``(T_e, S)``, or ``None``.
        **kwargs: Keyword arguments of :func:`write_episodes` (``fps``, ``source``, ...).

    Returns:
        ``root`` as a ``Path``.

    Raises:
        ValueError: If the episode counts differ, or as :func:`write_episodes`.
    """
    counts = {"frames": len(frames), "actions": len(actions)}
    if states is not None:
        counts["states"] = len(states)
    if len(set(counts.values())) != 1:
        raise ValueError(
            f"from_arrays: the arrays hold different numbers of episodes ({counts}); their "
            "first dimension is the episode index and must agree."
        )
    episodes = (
        Episode(frames[e], actions[e], None if states is None else states[e])
        for e in range(counts["frames"])
    )
    return write_episodes(root, episodes, **kwargs)


def _prepare_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"write_episodes: {root} exists and is not a directory.")
    episodes_dir = root / EPISODES_DIR
    existing = (root / META_FILE).exists() or (
        episodes_dir.is_dir() and any(episodes_dir.iterdir())
    )
    if existing and not overwrite:
        raise FileExistsError(
            f"write_episodes: {root} already holds a trajectory dataset (or an incomplete one); "
            "pass overwrite=True (`--overwrite`) to replace it, or choose another directory."
        )
    # meta.json goes first, so that a crash below leaves a directory marked incomplete.
    (root / META_FILE).unlink(missing_ok=True)
    if episodes_dir.is_dir():
        shutil.rmtree(episodes_dir)
    episodes_dir.mkdir(parents=True)


def _episode_arrays(
    root: Path, index: int, episode: Episode
) -> tuple[dict[str, np.ndarray], tuple[tuple[int, ...], int, int]]:
    """The validated arrays of one episode file and its ``(frame_shape, A, S)``."""
    where = f"write_episodes: episode {index}"
    if (episode.frames is None) == (episode.video is None):
        raise ValueError(f"{where}: set exactly one of 'frames' and 'video'.")
    if episode.video is not None:
        num_frames, frame_shape = _probe_video(root, episode.video, where)
        arrays = {"video": np.array(str(episode.video))}
    else:
        frames = _check_frames(np.asarray(episode.frames), where, "frames", ndims=(3, 4))
        num_frames, frame_shape = len(frames), frames.shape[1:]
        arrays = {"frames": frames}
    if num_frames < 1:
        raise ValueError(f"{where}: the episode has no frames.")
    actions = _float_array(episode.actions, where, "actions", ndim=2)
    if len(actions) != num_frames - 1:
        raise ValueError(
            f"{where}: 'actions' has {len(actions)} rows but the episode has {num_frames} "
            f"frames; expected T - 1 = {num_frames - 1} (action t leads from frame t to t+1)."
        )
    if episode.states is None:
        states = np.zeros((num_frames, 0), dtype=np.float32)
    else:
        states = _float_array(episode.states, where, "states", ndim=2)
    if len(states) != num_frames:
        raise ValueError(
            f"{where}: 'states' has {len(states)} rows but the episode has {num_frames} "
            "frames; expected one state per frame."
        )
    arrays.update(actions=actions, states=states)
    if episode.goal_frame is not None:
        goal = _check_frames(np.asarray(episode.goal_frame), where, "goal_frame", ndims=(2, 3))
        if goal.shape != frame_shape:
            raise ValueError(
                f"{where}: 'goal_frame' has shape {goal.shape}; expected a frame {frame_shape}."
            )
        arrays["goal_frame"] = goal
    if episode.goal_state is not None:
        goal_state = _float_array(episode.goal_state, where, "goal_state", ndim=1)
        if goal_state.shape != (states.shape[1],):
            raise ValueError(
                f"{where}: 'goal_state' has shape {goal_state.shape}; expected "
                f"({states.shape[1]},), the state size."
            )
        arrays["goal_state"] = goal_state
    return arrays, (tuple(frame_shape), actions.shape[1], states.shape[1])


def _check_frames(frames: np.ndarray, where: str, key: str, ndims: tuple[int, int]) -> np.ndarray:
    if frames.dtype != np.uint8:
        raise ValueError(
            f"{where}: {key!r} has dtype {frames.dtype}; expected uint8 (scale to 0..255 and "
            "cast with .astype(np.uint8))."
        )
    if frames.ndim not in ndims:
        raise ValueError(
            f"{where}: {key!r} has shape {frames.shape}; expected {ndims[0]} dimensions "
            f"(grayscale) or {ndims[1]} (channels last)."
        )
    return frames


def _float_array(value: Any, where: str, key: str, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {key!r} has dtype {array.dtype}; expected numbers.")
    array = array.astype(np.float32)
    if array.ndim != ndim:
        raise ValueError(f"{where}: {key!r} has shape {array.shape}; expected {ndim} dimensions.")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        position = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{where}: {key!r} holds {len(bad)} non-finite value(s), the first "
            f"{array[position]} at index {position}; only finite values can be trained on."
        )
    return array


def _check_same_dims(
    index: int, dims: tuple[tuple[int, ...], int, int], first: tuple[tuple[int, ...], int, int]
) -> None:
    for name, value, expected in zip(
        ("frame shape", "action size", "state size"), dims, first, strict=True
    ):
        if value != expected:
            raise ValueError(
                f"write_episodes: episode {index}: {name} {value} differs from episode 0's "
                f"{expected}; all episodes of a dataset share one frame shape, action size and "
                "state size."
            )


def _probe_video(root: Path, video: str, where: str) -> tuple[int, tuple[int, ...]]:
    """Frame count and frame shape ``(H, W, 3)`` of an episode's mp4."""
    decord = _import_decord()
    path = root / video
    try:
        reader = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
        num_frames, shape = len(reader), tuple(reader[0].shape)
        del reader
    except (decord.DECORDError, RuntimeError, OSError, IndexError) as exc:
        raise ValueError(
            f"{where}: 'video' {path} cannot be read ({type(exc).__name__}: {exc}); put the "
            "mp4 inside the dataset directory and give its path relative to it."
        ) from exc
    return num_frames, shape


def _bound(values: Sequence[float] | None, action_dim: int, name: str) -> list[float] | None:
    if values is None:
        return None
    bound = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(bound) != action_dim:
        raise ValueError(f"write_episodes: {name} has {len(bound)} values; expected {action_dim}.")
    return bound


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"write_episodes: {name} must be positive or None, got {value}.")
    return value


def _save_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save = np.savez_compressed if compress else np.savez
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            save(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- reading -------------------------------------------------------------------------------------


def read_meta(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``root/meta.json``.

    Raises:
        FileNotFoundError: If ``root`` or its ``meta.json`` is missing (an incomplete write).
        ValueError: If ``meta.json`` is not JSON, has another ``format``, or lacks a key.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"trajectory dataset {root} does not exist or is not a directory; write one with "
            f"jepalab.data.trajectories.write_episodes or `jepalab collect --out {root}`."
        )
    path = root / META_FILE
    if not path.is_file():
        hint = " (episodes/ exists: an interrupted write; write it again)"
        raise FileNotFoundError(
            f"not a jepalab trajectory dataset: {path} is missing (write one with "
            "jepalab.data.trajectories.write_episodes or `jepalab collect`)"
            + (hint if (root / EPISODES_DIR).is_dir() else "")
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != TRAJECTORY_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(
            f"{path}: format {found!r} is not {TRAJECTORY_FORMAT!r}, the only trajectory "
            "format this jepalab reads; rewrite the dataset with write_episodes."
        )
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {missing}; rewrite it with write_episodes.")
    if len(meta["episode_lengths"]) != meta["num_episodes"]:
        raise ValueError(
            f"{path}: num_episodes={meta['num_episodes']} but episode_lengths lists "
            f"{len(meta['episode_lengths'])} episodes."
        )
    return meta


def read_episode(root: str | os.PathLike[str], index: int) -> Episode:
    """Load episode ``index`` whole (video frames decoded); ``states`` is ``(T, 0)`` if S = 0.

    Raises:
        IndexError: If ``index`` is out of range.
        EpisodeFileError: If the file is missing, corrupt, lacks a key, or disagrees with
            ``meta.json`` (names the file, and the key).
    """
    root = Path(root).expanduser()
    meta = read_meta(root)
    if not 0 <= index < meta["num_episodes"]:
        raise IndexError(f"episode {index} out of range: {root} has {meta['num_episodes']}.")
    arrays = _read_arrays(root, meta, index, frames=True, goals=True)
    return Episode(
        frames=arrays["frames"],
        actions=arrays["actions"],
        states=arrays["states"],
        goal_frame=arrays.get("goal_frame"),
        goal_state=arrays.get("goal_state"),
        video=arrays.get("video"),
    )


def _read_arrays(
    root: Path,
    meta: dict[str, Any],
    index: int,
    frames: bool | np.ndarray = True,
    goals: bool = False,
) -> dict[str, Any]:
    """``actions``, ``states`` and, as asked, ``frames`` (all or at the given indices) and the
    goals of one episode file, checked against ``meta``."""
    path = episode_path(root, index)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = _checked_arrays(root, meta, index, path, npz, frames, goals)
    except EpisodeFileError:
        raise
    except FileNotFoundError:
        raise EpisodeFileError(
            f"episode file {path} is missing; meta.json lists {meta['num_episodes']} episodes "
            "(write the dataset again)."
        ) from None
    except _NPZ_ERRORS as exc:
        raise EpisodeFileError(
            f"cannot read episode file {path} ({type(exc).__name__}: {exc})"
        ) from exc
    return arrays


def _checked_arrays(
    root: Path,
    meta: dict[str, Any],
    index: int,
    path: Path,
    npz: Any,
    frames: bool | np.ndarray,
    goals: bool,
) -> dict[str, Any]:
    length = meta["episode_lengths"][index]
    frame_shape = tuple(meta["frame_shape"])

    def get(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in npz.files:
            raise EpisodeFileError(
                f"episode file {path} has no key {key!r} (keys: {npz.files}); see "
                "docs/trajectories.md for the format."
            )
        array = npz[key]
        if array.shape != shape:
            raise EpisodeFileError(
                f"episode file {path}: {key!r} has shape {array.shape}, but meta.json implies "
                f"{shape}; the file does not belong to this dataset (write it again)."
            )
        return array

    arrays: dict[str, Any] = {
        "actions": get("actions", (length - 1, meta["action_dim"])).astype(np.float32),
        "states": get("states", (length, meta["state_dim"])).astype(np.float32),
    }
    if frames is not False:
        indices = None if frames is True else np.asarray(frames)
        if "video" in npz.files:
            arrays["video"] = str(npz["video"][()])
            arrays["frames"] = _decode_video(root / arrays["video"], path, length, indices)
        else:
            stored = get("frames", (length, *frame_shape))
            if stored.dtype != np.uint8:
                raise EpisodeFileError(
                    f"episode file {path}: 'frames' is {stored.dtype}, not uint8."
                )
            arrays["frames"] = stored if indices is None else stored[indices]
        if arrays["frames"].shape[1:] != frame_shape:
            raise EpisodeFileError(
                f"episode file {path}: frames of shape {arrays['frames'].shape[1:]}, but "
                f"meta.json says {frame_shape}."
            )
    if goals:
        if "goal_frame" in npz.files:
            arrays["goal_frame"] = get("goal_frame", frame_shape)
        if "goal_state" in npz.files:
            arrays["goal_state"] = get("goal_state", (meta["state_dim"],)).astype(np.float32)
    return arrays


def _decode_video(video: Path, path: Path, length: int, indices: np.ndarray | None) -> np.ndarray:
    decord = _import_decord()
    try:
        # A reader per call: decord readers must not be pickled into or forked with workers.
        reader = decord.VideoReader(str(video), num_threads=1, ctx=decord.cpu(0))
        if len(reader) != length:
            raise EpisodeFileError(
                f"episode file {path}: video {video} has {len(reader)} frames, but meta.json "
                f"says {length}."
            )
        wanted = range(length) if indices is None else indices.tolist()
        frames = reader.get_batch(list(wanted)).asnumpy()
        del reader
    except (decord.DECORDError, RuntimeError, OSError) as exc:
        raise EpisodeFileError(
            f"episode file {path}: cannot decode video {video} ({type(exc).__name__}: {exc})"
        ) from exc
    return frames


# -- datasets ------------------------------------------------------------------------------------


def _native_channels(frame_shape: Sequence[int]) -> int:
    return 1 if len(frame_shape) == 2 else int(frame_shape[2])


def _check_channels(channels: int | None, native: int, owner: str) -> int:
    """Output channels: ``native``, or 3 -> 1 (luma) / 1 -> 3 (repeated) on request."""
    if channels is None or channels == native:
        return native
    if (native, channels) in ((3, 1), (1, 3)):
        return int(channels)
    raise ValueError(
        f"{owner}: channels={channels} cannot be made from {native}-channel frames; use None "
        "(as stored), 1 (from RGB) or 3 (from grayscale)."
    )


def _normalisation(
    mean: float | Sequence[float], std: float | Sequence[float], channels: int, owner: str
) -> tuple[Tensor, Tensor]:
    """``mean``/``std`` as ``(C, 1, 1)`` tensors (a scalar applies to every channel)."""
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if len(m) not in (1, channels) or len(s) not in (1, channels):
        raise ValueError(
            f"{owner}: mean/std need 1 or {channels} values, got mean={mean}, std={std}."
        )
    if not bool((s > 0).all()):
        raise ValueError(f"{owner}: std must be positive, got {std}.")
    return m.expand(channels).reshape(channels, 1, 1), s.expand(channels).reshape(channels, 1, 1)


def frames_to_tensor(frames: np.ndarray, channels: int, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, C0)`` -> float32 ``(N, channels, H, W)``, scaled to
    ``[0, 1]`` then ``(x - mean) / std``; RGB -> 1 channel is ITU-R 601-2 luma."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.to(torch.float32).div_(255.0)
    if x.shape[1] == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return (x - mean) / std


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


# -- collation -----------------------------------------------------------------------------------


@dataclass
class TrajectoryBatch:
    """Stacked windows of one step (the Trainer moves the tensor fields to the device).

    Attributes:
        frames: float32 ``(B, T, C, H, W)``.
        actions: float32 ``(B, T-1, A)``.
        states: float32 ``(B, T, S)``.
        step: Global step the batch was drawn for.
        skipped: Samples of this batch that could not be read and were dropped.
    """

    frames: Tensor
    actions: Tensor
    states: Tensor
    step: int
    skipped: int


def collate_trajectories(
    items: Sequence[tuple[dict[str, Tensor] | None, SampleKey]],
) -> TrajectoryBatch:
    """Stack :class:`TrajectoryDataset` samples; ``None`` samples are dropped and counted.

    Raises:
        ValueError: If ``items`` is empty.
        RuntimeError: If every sample failed to load.
    """
    good, step, skipped = readable_samples(items)
    stacked = {key: torch.stack([s[key] for s in good]) for key in ("frames", "actions", "states")}
    return TrajectoryBatch(**stacked, step=step, skipped=skipped)


def describe(root: str | os.PathLike[str]) -> str:
    """One line: episodes, frames and bytes on disk of a dataset."""
    root = Path(root).expanduser()
    meta = read_meta(root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return (
        f"{meta['num_episodes']} episodes, {sum(meta['episode_lengths'])} frames, "
        f"{size / 1e6:.1f} MB on disk in {root}"
    )
