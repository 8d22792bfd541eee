"""The masking strategies I-JEPA compares its multi-block masks with (Assran et al. 2023,
Sec. 7 "Masking strategy", Table 6; ViT-B/16, linear probe on 1% of ImageNet labels):

=============  ==========================  ===========================  ===========
strategy       targets                     context                      Table 6
=============  ==========================  ===========================  ===========
multi-block    4 blocks, scale 0.15-0.2    block 0.85-1.0 minus targets 54.2
rasterized     the 3 other quadrants       one quadrant (0.25)          15.5
block          1 block, scale 0.6          its complement (0.4)         20.2
random         60% of the patches, random  their complement (0.4)       17.6
=============  ==========================  ===========================  ===========

Multi-block is :class:`~jepalab.masks.multiblock.MultiBlockMaskGenerator`; this module holds
the other three. Each draws per sample and returns a :class:`~jepalab.masks.multiblock.
MaskBatch` with one context per sample, so every method that takes multi-block masks takes
these (``mask=rasterized|block|random``; the sweep is ``ablation=ijepa_mask_strategy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from jepalab.masks.multiblock import MaskBatch, MultiBlockMaskGenerator, Range
from jepalab.ragged import Ragged


def _batch(contexts: list[np.ndarray], targets: list[np.ndarray], num_targets: int) -> MaskBatch:
    """A :class:`MaskBatch` from per-sample boolean ``(H, W)`` masks."""
    return MaskBatch(
        Ragged.from_sequences([torch.from_numpy(np.flatnonzero(c)) for c in contexts]),
        Ragged.from_sequences([torch.from_numpy(np.flatnonzero(t)) for t in targets]),
        num_targets,
    )


def _grid(grid_size: tuple[int, ...], name: str, smallest: int) -> tuple[int, int]:
    if len(grid_size) != 2:
        raise ValueError(
            f"mask.name={name} samples 2-D masks but the encoder's grid is {tuple(grid_size)}"
        )
    height, width = int(grid_size[0]), int(grid_size[1])
    if min(height, width) < smallest:
        raise ValueError(f"mask.name={name} needs a token grid of at least {smallest}x{smallest}")
    return height, width


@dataclass
class RasterizedMaskGenerator:
    """Table 6 "rasterized": the grid is cut into four quadrants; one, drawn uniformly, is the
    context and the other three are the targets (``num_targets = 3``, in raster order).
    Quadrants of an odd grid split at ``H // 2`` and ``W // 2``."""

    grid_size: tuple[int, int]
    num_mask_tokens: int = 1
    num_targets: int = 3

    def __post_init__(self) -> None:
        self.grid_size = _grid(self.grid_size, "rasterized", 2)

    def quadrants(self) -> list[np.ndarray]:
        """The four ``(H, W)`` quadrant masks: top-left, top-right, bottom-left, bottom-right."""
        height, width = self.grid_size
        rows = (slice(0, height // 2), slice(height // 2, height))
        cols = (slice(0, width // 2), slice(width // 2, width))
        out = []
        for r in rows:
            for c in cols:
                mask = np.zeros(self.grid_size, dtype=bool)
                mask[r, c] = True
                out.append(mask)
        return out

    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch:
        quadrants = self.quadrants()
        contexts, targets = [], []
        for _ in range(batch_size):
            k = int(rng.integers(4))
            contexts.append(quadrants[k])
            targets.extend(q for i, q in enumerate(quadrants) if i != k)
        return _batch(contexts, targets, self.num_targets)


@dataclass
class BlockMaskGenerator:
    """Table 6 "block": ``num_targets`` blocks (the paper: one, of scale 0.6; aspect ratio
    as multi-block's, 0.75-1.5) are the targets and the context is everything else
    (``min_keep`` tokens at least: blocks are redrawn until it holds)."""

    grid_size: tuple[int, int]
    target_scale: Range = (0.6, 0.6)
    aspect_ratio: Range = (0.75, 1.5)
    num_targets: int = 1
    min_keep: int = 10
    num_mask_tokens: int = 1
    max_tries: int = 100

    def __post_init__(self) -> None:
        self.grid_size = _grid(self.grid_size, "block", 1)
        # block sizes (and the checks of their ranges) are multi-block's
        self._blocks = MultiBlockMaskGenerator(
            self.grid_size,
            target_scale=self.target_scale,
            aspect_ratio=self.aspect_ratio,
            num_targets=self.num_targets,
            min_keep=self.min_keep,
        )

    def _block(self, rng: np.random.Generator) -> np.ndarray:
        """One target block: multi-block's size draw, placed uniformly (last row included)."""
        (height, width) = self.grid_size
        h, w = self._blocks.block_size(rng, self.target_scale, self.aspect_ratio)
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        mask = np.zeros(self.grid_size, dtype=bool)
        mask[top : top + h, left : left + w] = True
        return mask

    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch:
        contexts, targets = [], []
        for _ in range(batch_size):
            for _ in range(self.max_tries):
                blocks = [self._block(rng) for _ in range(self.num_targets)]
                context = ~np.logical_or.reduce(blocks)
                if context.sum() >= self.min_keep:
                    break
            else:
                raise RuntimeError(
                    f"mask=block: {self.num_targets} target block(s) of scale {self.target_scale}"
                    f" leave fewer than mask.min_keep={self.min_keep} tokens on the "
                    f"{self.grid_size} grid; lower mask.target_scale or mask.min_keep"
                )
            contexts.append(context)
            targets.extend(blocks)
        return _batch(contexts, targets, self.num_targets)


@dataclass
class RandomMaskGenerator:
    """Table 6 "random": a uniformly random set of ``round(ratio * H * W)`` tokens, ``ratio``
    drawn from ``target_scale`` (the paper: 0.6), is the target; the context is the rest."""

    grid_size: tuple[int, int]
    target_scale: Range = (0.6, 0.6)
    min_keep: int = 10
    num_mask_tokens: int = 1
    num_targets: int = 1

    def __post_init__(self) -> None:
        self.grid_size = _grid(self.grid_size, "random", 1)
        lo, hi = self.target_scale
        if not 0 < lo <= hi < 1:
            raise ValueError(f"mask.target_scale must satisfy 0 < low <= high < 1, got {lo, hi}")
        tokens = self.grid_size[0] * self.grid_size[1]
        if tokens - round(hi * tokens) < self.min_keep:
            raise ValueError(
                f"mask=random with mask.target_scale up to {hi} leaves fewer than "
                f"mask.min_keep={self.min_keep} of the {tokens} tokens as context"
            )

    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch:
        tokens = self.grid_size[0] * self.grid_size[1]
        contexts, targets = [], []
        for _ in range(batch_size):
            count = max(1, round(rng.uniform(*self.target_scale) * tokens))
            target = np.zeros(tokens, dtype=bool)
            target[rng.permutation(tokens)[:count]] = True
            targets.append(target)
            contexts.append(~target)
        return _batch(contexts, targets, self.num_targets)


__all__ = ["BlockMaskGenerator", "RandomMaskGenerator", "RasterizedMaskGenerator"]
