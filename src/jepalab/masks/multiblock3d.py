"""V-JEPA 3-D multi-block masks (Bardes et al. 2024, Sec. 3.2 and Appendix "Masking").

A *mask configuration* samples ``num_blocks`` spatio-temporal blocks per clip on the
``(T, H, W)`` tubelet grid; the target is the union of the blocks, the context its complement.
V-JEPA uses two configurations per batch, each predicted from its own context with its own
mask token:

* short-range: 8 blocks of spatial scale 0.15,
* long-range: 2 blocks of spatial scale 0.7,

both with aspect ratio 0.75-1.5 and temporal scale 1.0 (tubes through the whole clip).

Every sample keeps all of its tokens. The reference (``src/masks/multiblock3d.py``) cuts every
sample to the batch minimum of each configuration, which drops 31-65% of the context and
always its latest tokens (the indices are sorted, so the last frames go first), and draws one
block size per configuration for the whole batch. Both are available for parity through
``trim_to_batch_min`` and ``reference_quirks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jepalab.masks.multiblock import MaskBatch, Range
from jepalab.ragged import Ragged


@dataclass(frozen=True)
class BlockSpec:
    """One mask configuration (one entry of V-JEPA's ``cfgs_mask``).

    Args:
        num_blocks: blocks per clip; the target is their union.
        spatial_scale: fraction of the ``H x W`` grid covered by one block.
        temporal_scale: fraction of the ``T`` time steps covered by one block.
        aspect_ratio: height / width range of a block.
        max_temporal_keep: the context may only use the first ``max_temporal_keep * T`` time
            steps; later steps become targets (1.0 in V-JEPA).
    """

    num_blocks: int = 8
    spatial_scale: Range = (0.15, 0.15)
    temporal_scale: Range = (1.0, 1.0)
    aspect_ratio: Range = (0.75, 1.5)
    max_temporal_keep: float = 1.0

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got ({lo}, {hi})")
        if self.spatial_scale[1] > 1 or self.temporal_scale[1] > 1:
            raise ValueError("spatial_scale and temporal_scale are fractions and must be <= 1")
        if not 0 < self.max_temporal_keep <= 1:
            raise ValueError(f"max_temporal_keep must be in (0, 1], got {self.max_temporal_keep}")


SHORT_RANGE = BlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15))
LONG_RANGE = BlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7))


@dataclass
class MultiBlock3DMaskGenerator:
    """Samples V-JEPA masks on a ``(T, H, W)`` grid (a 2-D ``(H, W)`` grid is one time step).

    Args:
        grid_size: the encoder's token grid.
        specs: the mask configurations, each with its own context and mask token.
        min_keep: a sample's context must keep at least this many tokens; its blocks are
            redrawn otherwise (V-JEPA: a non-empty context).
        trim_to_batch_min: cut every sample to the shortest context / target of its
            configuration in the batch, as the reference does (parity only).
        reference_quirks: one block size per configuration for the whole batch, as the
            reference draws it (parity only).
        max_tries: redraws before giving up with an error.
    """

    grid_size: tuple[int, ...]
    specs: Sequence[BlockSpec] = (SHORT_RANGE, LONG_RANGE)
    min_keep: int = 1
    trim_to_batch_min: bool = False
    reference_quirks: bool = False
    max_tries: int = 100

    def __post_init__(self) -> None:
        grid = tuple(int(s) for s in self.grid_size)
        if len(grid) == 2:
            grid = (1, *grid)
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"grid_size must be (T, H, W) or (H, W), got {self.grid_size}")
        self.grid_size = grid
        self.specs = tuple(self.specs)
        if not self.specs:
            raise ValueError("at least one mask configuration (block spec) is needed")
        if not 0 <= self.min_keep < math.prod(grid):
            raise ValueError(f"mask.min_keep={self.min_keep} must be below the grid's {grid}")

    @property
    def num_mask_tokens(self) -> int:
        """One learnable mask token per configuration (V-JEPA)."""
        return len(self.specs)

    # -- block geometry ---------------------------------------------------------------------
    def block_size(self, rng: np.random.Generator, spec: BlockSpec) -> tuple[int, int, int]:
        """Draw ``(t, h, w)``: ``t ~ temporal_scale * T``, ``h * w ~ spatial_scale * H * W``
        and ``h / w ~ aspect_ratio`` (independent uniform draws, as the reference)."""
        duration, height, width = self.grid_size
        t = max(1, int(duration * rng.uniform(*spec.temporal_scale)))
        area = int(height * width * rng.uniform(*spec.spatial_scale))
        ratio = rng.uniform(*spec.aspect_ratio)
        h = int(round(math.sqrt(area * ratio)))
        w = int(round(math.sqrt(area / ratio)))
        return t, max(1, min(h, height)), max(1, min(w, width))

    def _target(
        self, rng: np.random.Generator, spec: BlockSpec, sizes: list[tuple[int, int, int]]
    ) -> np.ndarray:
        """``(T, H, W)`` bool: the union of blocks of the given sizes at uniform positions."""
        duration, height, width = self.grid_size
        target = np.zeros(self.grid_size, dtype=bool)
        for t, h, w in sizes:
            start = rng.integers(0, duration - t + 1)
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            target[start : start + t, top : top + h, left : left + w] = True
        keep_steps = max(1, int(duration * spec.max_temporal_keep))
        target[keep_steps:] = True  # the context never reaches past max_temporal_keep
        return target

    def _sample(
        self, rng: np.random.Generator, spec: BlockSpec, shared: tuple[int, int, int] | None
    ) -> np.ndarray:
        for _ in range(self.max_tries):
            sizes = [shared or self.block_size(rng, spec) for _ in range(spec.num_blocks)]
            target = self._target(rng, spec, sizes)
            if target.size - target.sum() >= max(self.min_keep, 1):
                return target
        raise RuntimeError(
            f"no context of at least {max(self.min_keep, 1)} tokens in {self.max_tries} draws "
            f"of {spec} on grid {self.grid_size}; lower the block scales or mask.min_keep"
        )

    # -- sampling ---------------------------------------------------------------------------
    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch:
        """Sample masks for ``batch_size`` clips: ``len(specs)`` context/target pairs each."""
        shared = [self.block_size(rng, s) if self.reference_quirks else None for s in self.specs]
        contexts = [[] for _ in self.specs]  # per configuration, per sample
        targets = [[] for _ in self.specs]
        for _ in range(batch_size):
            for m, spec in enumerate(self.specs):
                target = self._sample(rng, spec, shared[m]).reshape(-1)
                contexts[m].append(torch.from_numpy(np.flatnonzero(~target)))
                targets[m].append(torch.from_numpy(np.flatnonzero(target)))
        if self.trim_to_batch_min:
            for per_config in (*contexts, *targets):
                shortest = min(len(seq) for seq in per_config)
                per_config[:] = [seq[:shortest] for seq in per_config]
        num = len(self.specs)
        order = [(b, m) for b in range(batch_size) for m in range(num)]  # sample-major
        return MaskBatch(
            context=Ragged.from_sequences([contexts[m][b] for b, m in order]),
            targets=Ragged.from_sequences([targets[m][b] for b, m in order]),
            num_targets=num,
            num_contexts=num,
            mask_ids=torch.arange(num),
        )


__all__ = ["LONG_RANGE", "SHORT_RANGE", "BlockSpec", "MultiBlock3DMaskGenerator"]
