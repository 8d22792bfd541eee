"""The on-disk trajectory format: its constants, the in-memory :class:`Episode`, and reading
and checking ``meta.json``.

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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRAJECTORY_FORMAT = "jepalab.trajectories/1"
META_FILE = "meta.json"
EPISODES_DIR = "episodes"

_META_KEYS = ("num_episodes", "episode_lengths", "action_dim", "state_dim", "frame_shape")


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
            f"jepalab.data.trajectories.write_episodes or `jepalab collect out={root}`."
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


def describe(root: str | os.PathLike[str]) -> str:
    """One line: episodes, frames and bytes on disk of a dataset."""
    root = Path(root).expanduser()
    meta = read_meta(root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return (
        f"{meta['num_episodes']} episodes, {sum(meta['episode_lengths'])} frames, "
        f"{size / 1e6:.1f} MB on disk in {root}"
    )
