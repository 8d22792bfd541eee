"""On-disk episodes for action-conditioned world models: the format, its reader and writer, and
the datasets that sample it.

A trajectory dataset is a directory of ``meta.json`` and one ``.npz`` file per episode (full
description and rationale in ``docs/trajectories.md`` and :mod:`.format`). Modules:

* :mod:`.format`: the format's constants, :class:`Episode`, :class:`EpisodeFileError`,
  :func:`episode_path`, :func:`read_meta` and :func:`describe`;
* :mod:`.reader`: :func:`read_episode` and the checked episode arrays the datasets sample;
* :mod:`.writer`: :func:`write_episodes` and :func:`from_arrays`;
* :mod:`.transforms`: :func:`frames_to_tensor` and the datasets' channel/normalisation checks;
* :mod:`.datasets`: :class:`TrajectoryDataset`, :class:`TrajectoryFrames` and
  :func:`split_episodes`;
* :mod:`.collate`: :class:`TrajectoryBatch` and :func:`collate_trajectories`.

Datasets: :class:`TrajectoryDataset` (``"trajectories"``) yields windows of ``num_frames``
frames with the actions between them, collated into a :class:`TrajectoryBatch` by
:func:`collate_trajectories`; :class:`TrajectoryFrames` (``"trajectory_frames"``) yields every
frame as an image sample, for I-JEPA pretraining and probing on the same data. As for the other
datasets, an unreadable file is logged (logger ``jepalab.data``), counted in ``num_corrupt``,
and its sample is ``None``, dropped and counted by the collator.
"""

from __future__ import annotations

from jepalab.data.trajectories.collate import TrajectoryBatch, collate_trajectories
from jepalab.data.trajectories.datasets import (
    TEST_FRACTION,
    TrajectoryDataset,
    TrajectoryFrames,
    split_episodes,
)
from jepalab.data.trajectories.format import (
    EPISODES_DIR,
    META_FILE,
    TRAJECTORY_FORMAT,
    Episode,
    EpisodeFileError,
    describe,
    episode_path,
    read_meta,
)
from jepalab.data.trajectories.reader import read_episode
from jepalab.data.trajectories.transforms import frames_to_tensor
from jepalab.data.trajectories.writer import from_arrays, write_episodes

__all__ = [
    "EPISODES_DIR",
    "META_FILE",
    "TEST_FRACTION",
    "TRAJECTORY_FORMAT",
    "Episode",
    "EpisodeFileError",
    "TrajectoryBatch",
    "TrajectoryDataset",
    "TrajectoryFrames",
    "collate_trajectories",
    "describe",
    "episode_path",
    "frames_to_tensor",
    "from_arrays",
    "read_episode",
    "read_meta",
    "split_episodes",
    "write_episodes",
]
