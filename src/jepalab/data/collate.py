"""Turning samples into a batch; unreadable samples (``None``) are dropped and counted here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from jepalab.data.sampling import SampleKey
from jepalab.errors import DataError


@dataclass
class SampleBatch:
    """Stacked images and labels of one step.

    Attributes:
        images: ``(B, C, H, W)`` (or ``(B, C, T, H, W)`` for video).
        labels: ``(B,)`` int64, -1 where a dataset has no labels.
        step: global step the batch was drawn for (seeds the masks), counted from 0: the
            logs and checkpoints call it ``step + 1``.
        skipped: samples that could not be read for this batch (dropped, or replaced by
            others: see :class:`~jepalab.data.sampling.SeededDataset`).
    """

    images: Tensor
    labels: Tensor
    step: int
    skipped: int


def readable_samples(items: Sequence[tuple[Any, SampleKey]]) -> tuple[list[Any], int, int]:
    """``(samples that loaded, step, number of unreadable samples)`` of a keyed batch.

    A ``None`` sample is an unreadable file (already logged by its dataset) and is dropped;
    the count also takes in the unreadable samples :class:`~jepalab.data.sampling.
    SeededDataset` replaced (``key.replaced``). Fails if nothing loaded.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    step = items[0][1].step
    good = [sample for sample, _ in items if sample is not None]
    unreadable = len(items) - len(good) + sum(key.replaced for _, key in items)
    if not good:
        raise DataError(
            f"every sample of the batch of step {step + 1} failed to load, {unreadable} "
            "unreadable in all (replacements included); see the warnings above for the file "
            "names"
        )
    return good, step, unreadable


def batch_layout(items: Sequence[tuple[Any, SampleKey]]) -> tuple[list[int], int]:
    """``(positions in the step's global batch of the samples that loaded, global batch
    size)``; a batch of keys without positions (``batch_size=0``) is its own global batch."""
    global_size = items[0][1].batch_size or len(items)
    if items[0][1].batch_size:
        positions = [key.position for sample, key in items if sample is not None]
    else:
        positions = [i for i, (sample, _) in enumerate(items) if sample is not None]
    return positions, global_size


IMAGE_KEYS = ("image", "images", "video", "pixels", "x")
LABEL_KEYS = ("label", "labels", "target", "y")


def image_and_label(sample: Any) -> tuple[Tensor, int]:
    """A dataset's sample as ``(image, label)``: a tensor (no label: ``-1``), a tuple or list
    ``(image[, label, ...])``, or a dict with an image under one of :data:`IMAGE_KEYS` and
    an optional label under one of :data:`LABEL_KEYS`."""
    if isinstance(sample, Tensor):
        return sample, -1
    if isinstance(sample, dict):
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None:
            raise DataError(
                f"a dict sample needs its image under one of {list(IMAGE_KEYS)}; it has "
                f"{sorted(sample)}"
            )
        label = next((sample[k] for k in LABEL_KEYS if k in sample), -1)
        return image, int(label)
    if isinstance(sample, (tuple, list)) and sample and isinstance(sample[0], Tensor):
        return sample[0], int(sample[1]) if len(sample) > 1 else -1
    raise DataError(
        f"a sample must be a tensor, a tuple (image, label) or a dict with an image "
        f"({'/'.join(IMAGE_KEYS)}); got {type(sample).__name__}"
    )


def collate_samples(items: Sequence[tuple[Any, SampleKey]]) -> SampleBatch:
    """Stack samples (see :func:`image_and_label`); a ``None`` sample (unreadable file) is
    dropped."""
    good, step, skipped = readable_samples(items)
    pairs = [image_and_label(s) for s in good]
    images = torch.stack([image for image, _ in pairs])
    labels = torch.tensor([label for _, label in pairs], dtype=torch.long)
    return SampleBatch(images, labels, step, skipped)


def collate_readable(samples: Sequence[Any]) -> Any | None:
    """``default_collate`` of the samples that loaded, for evaluation loaders (no keys, no
    replacement): a ``None`` sample is an unreadable file, already logged by its dataset, and
    is left out. ``None`` when no sample of the batch loaded. The caller counts the unreadable
    ones as the dataset's length minus the samples it got."""
    good = [sample for sample in samples if sample is not None]
    return default_collate(good) if good else None
