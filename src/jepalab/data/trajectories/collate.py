"""Collation of :class:`~jepalab.data.trajectories.datasets.TrajectoryDataset` windows into a
:class:`TrajectoryBatch`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from jepalab.data.collate import readable_samples
from jepalab.data.sampling import SampleKey


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
