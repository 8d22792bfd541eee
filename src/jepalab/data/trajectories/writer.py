"""Writing trajectory datasets: validated episodes (:func:`write_episodes`) or plain arrays
(:func:`from_arrays`), each file atomically and ``meta.json`` last."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jepalab.data.trajectories.format import (
    EPISODES_DIR,
    META_FILE,
    TRAJECTORY_FORMAT,
    Episode,
    episode_path,
)
from jepalab.data.video import import_decord


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
    """Validate and write episodes as a trajectory dataset (format: ``docs/trajectories.md``).

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
            "pass overwrite=True (`overwrite=true`) to replace it, or choose another directory."
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
    decord = import_decord()
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
