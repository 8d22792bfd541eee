"""Datasets and a name -> constructor registry (configs refer to datasets by name).

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

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from jepalab.data.digits import DIGITS_MEAN, DIGITS_STD, DigitsCanvas
from jepalab.data.image_folder import IMG_EXTENSIONS, ImageFolderDataset
from jepalab.data.moving_digits import (
    MOVING_DIGITS_MEAN,
    MOVING_DIGITS_STD,
    MovingDigits,
    export_mp4,
)
from jepalab.data.physics import PhysicsBenchmark, make_physics_benchmark
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
from jepalab.errors import ArgumentError

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

DATASETS: dict[str, Callable[..., Any]] = {}

_F = TypeVar("_F", bound=Callable[..., Any])


def register_dataset(name: str) -> Callable[[_F], _F]:
    """Decorator registering a dataset class or factory under ``name``.

    Args:
        name: Registry key used by configs (``data.name``).

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered (silent replacement would make a config
            build a different dataset depending on import order).
    """

    def decorator(factory: _F) -> _F:
        if name in DATASETS:
            raise ValueError(
                f"Dataset name {name!r} is already registered to {DATASETS[name]!r}; "
                "choose a different name."
            )
        DATASETS[name] = factory
        return factory

    return decorator


def list_datasets() -> list[str]:
    """Sorted names of all registered datasets."""
    return sorted(DATASETS)


def create_dataset(name: str, **kwargs: Any) -> Any:
    """Build a registered dataset by name.

    Args:
        name: Registered dataset name, e.g. ``"digits_canvas"``.
        **kwargs: Constructor arguments of that dataset.

    Returns:
        The dataset instance.

    Raises:
        ValueError: If ``name`` is not registered (the message lists the available names).
        ArgumentError: (a ``TypeError``) If ``kwargs`` do not match the constructor (the
            message names the dataset and its accepted arguments).
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; available datasets: {', '.join(list_datasets())}. "
            "Fix the dataset name in your config or register a new one with @register_dataset."
        )
    factory = DATASETS[name]
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some C-implemented callables expose no signature
        signature = None
    if signature is not None:
        # Check arguments before calling so that a config typo is reported against the dataset
        # name rather than as a bare TypeError from deep inside a constructor.
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            params = ", ".join(signature.parameters)
            raise ArgumentError(
                f"bad arguments for dataset {name!r} (data.params): {exc}; accepted: {params}"
            ) from None
    return factory(**kwargs)


register_dataset("digits_canvas")(DigitsCanvas)
register_dataset("image_folder")(ImageFolderDataset)
register_dataset("moving_digits")(MovingDigits)
register_dataset("trajectories")(TrajectoryDataset)
register_dataset("trajectory_frames")(TrajectoryFrames)
register_dataset("video_files")(VideoDataset)
