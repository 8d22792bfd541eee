"""Datasets, each registered by name in its own module (:mod:`jepalab.data.registry`;
configs refer to datasets by name, ``data.name``).

Built-in names:

* ``digits_canvas`` (:class:`DigitsCanvas`): embedded handwritten digits, images, no download;
* ``image_folder`` (:class:`ImageFolderDataset`): users' own images;
* ``moving_digits`` (:class:`MovingDigits`): embedded moving handwritten digits, video clips
  with motion labels, no download;
* ``trajectories`` (:class:`TrajectoryDataset`): windows of frames, actions and states from an
  on-disk trajectory dataset (``docs/trajectories.md``; ``jepalab collect`` writes one);
* ``trajectory_frames`` (:class:`TrajectoryFrames`): every frame of a trajectory dataset as an
  image, optionally labelled by position cell;
* ``video_files`` (:class:`VideoDataset`): users' own videos (list file or folder, decord).
"""

from __future__ import annotations

from jepalab.data.digits import DIGITS_MEAN, DIGITS_STD, DigitsCanvas
from jepalab.data.image_folder import IMG_EXTENSIONS, ImageFolderDataset
from jepalab.data.moving_digits import (
    MOVING_DIGITS_MEAN,
    MOVING_DIGITS_STD,
    MovingDigits,
    export_mp4,
)
from jepalab.data.physics import PhysicsBenchmark, make_physics_benchmark
from jepalab.data.registry import DATASETS, create_dataset, list_datasets, register_dataset
from jepalab.data.trajectories import (
    TRAJECTORY_FORMAT,
    Episode,
    EpisodeFileError,
    TrajectoryBatch,
    TrajectoryDataset,
    TrajectoryFrames,
    collate_trajectories,
    from_arrays,
    read_episode,
    read_meta,
    write_episodes,
)
from jepalab.data.video import VIDEO_EXTENSIONS, VideoDataset

__all__ = [
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMG_EXTENSIONS",
    "MOVING_DIGITS_MEAN",
    "MOVING_DIGITS_STD",
    "TRAJECTORY_FORMAT",
    "VIDEO_EXTENSIONS",
    "DigitsCanvas",
    "Episode",
    "EpisodeFileError",
    "ImageFolderDataset",
    "MovingDigits",
    "PhysicsBenchmark",
    "TrajectoryBatch",
    "TrajectoryDataset",
    "TrajectoryFrames",
    "VideoDataset",
    "collate_trajectories",
    "create_dataset",
    "export_mp4",
    "from_arrays",
    "list_datasets",
    "make_physics_benchmark",
    "read_episode",
    "read_meta",
    "register_dataset",
    "write_episodes",
]
