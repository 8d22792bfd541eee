"""Reading episode files: whole episodes (:func:`read_episode`) and the checked arrays the
datasets sample from (frames from the ``.npz`` or decoded from its mp4)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from jepalab.data.trajectories.format import (
    Episode,
    EpisodeFileError,
    episode_path,
    read_meta,
)
from jepalab.data.video import import_decord

# What a broken .npz raises: truncated or garbage files (BadZipFile, ValueError from np.load's
# format sniffing, EOFError), corrupt compressed members (zlib.error), unreadable files (OSError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


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
    decord = import_decord()
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
