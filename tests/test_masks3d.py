"""V-JEPA 3-D multi-block masks: block statistics, tubes, no overlap, nothing dropped, parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jepalab.data.sampling import SampleKey
from jepalab.masks import LONG_RANGE, SHORT_RANGE, BlockSpec, MaskCollator
from jepalab.masks import MultiBlock3DMaskGenerator as Gen3D

GRID = (8, 14, 14)  # 16 frames, tubelet 2, ViT/16 at 224 px
N = 8 * 14 * 14


def _as_grid(indices: torch.Tensor) -> np.ndarray:
    mask = np.zeros(N, dtype=bool)
    mask[indices.numpy()] = True
    return mask.reshape(GRID)


def test_block_sizes_follow_the_configured_ranges():
    gen = Gen3D(GRID)
    rng = np.random.default_rng(0)
    for spec, scale in ((SHORT_RANGE, 0.15), (LONG_RANGE, 0.7)):
        sizes = np.array([gen.block_size(rng, spec) for _ in range(2000)])
        t, h, w = sizes.T
        assert (t == GRID[0]).all()  # temporal scale 1.0: tubes through the whole clip
        area = int(GRID[1] * GRID[2] * scale)
        # h = round(sqrt(area * a)), w = round(sqrt(area / a)), a in [0.75, 1.5]
        assert h.min() >= round(np.sqrt(area * 0.75)) and h.max() <= round(np.sqrt(area * 1.5))
        assert w.min() >= round(np.sqrt(area / 1.5)) and w.max() <= round(np.sqrt(area / 0.75))
        rel = (h * w - area) / area
        assert np.abs(rel).max() < 0.25 and abs(rel.mean()) < 0.06
        ratio = h / w
        assert ratio.min() > 0.6 and ratio.max() < 1.9 and ratio.std() > 0.1  # varies


def test_targets_are_tubes_union_of_blocks_and_context_is_the_complement():
    gen = Gen3D(GRID)
    masks = gen(16, np.random.default_rng(1))
    assert masks.num_contexts == masks.num_targets == 2
    assert masks.mask_ids.tolist() == [0, 1]
    ctx, tgt = masks.context.sequences(), masks.targets.sequences()
    for c, t in zip(ctx, tgt, strict=True):
        c_grid, t_grid = _as_grid(c), _as_grid(t)
        assert not (c_grid & t_grid).any()  # context and target are disjoint
        assert (c_grid | t_grid).all()  # and together cover every token: nothing dropped
        assert (t_grid == t_grid[:1]).all()  # every target column spans all time steps
        assert len(c) > 0
    # long-range targets cover far more than short-range ones
    short = masks.targets.lengths[0::2].float().mean()
    long = masks.targets.lengths[1::2].float().mean()
    assert long > 1.3 * short
    # samples keep different numbers of tokens: nothing is cut to the batch minimum
    assert masks.context.lengths[0::2].unique().numel() > 1


def test_trim_to_batch_min_is_the_reference_behaviour():
    gen = Gen3D(GRID, trim_to_batch_min=True)
    full = Gen3D(GRID)
    trimmed, kept = gen(8, np.random.default_rng(2)), full(8, np.random.default_rng(2))
    for m in range(2):
        lengths = trimmed.context.lengths[m::2]
        assert (lengths == lengths.min()).all()
        assert lengths[0] == kept.context.lengths[m::2].min()
        # trimming keeps the lowest indices: the latest time steps are the ones dropped
        for cut, whole in zip(
            trimmed.context.sequences()[m::2], kept.context.sequences()[m::2], strict=True
        ):
            assert torch.equal(cut, whole[: len(cut)])
    dropped = 1 - trimmed.context.total / kept.context.total
    assert dropped > 0.1


def test_max_temporal_keep_limits_the_context_to_the_first_steps():
    spec = BlockSpec(num_blocks=2, spatial_scale=(0.15, 0.15), max_temporal_keep=0.5)
    masks = Gen3D(GRID, [spec])(4, np.random.default_rng(3))
    for c in masks.context.sequences():
        assert not _as_grid(c)[4:].any()


def test_2d_grid_is_one_time_step_and_bad_specs_fail_clearly():
    masks = Gen3D((14, 14))(2, np.random.default_rng(0))
    assert masks.context.lengths.sum() + masks.targets.lengths.sum() == 2 * 2 * 196
    with pytest.raises(ValueError, match="spatial_scale"):
        BlockSpec(spatial_scale=(0.5, 0.2))
    with pytest.raises(RuntimeError, match="min_keep"):
        Gen3D((2, 2, 2), [BlockSpec(1, (1.0, 1.0), aspect_ratio=(1.0, 1.0))])(
            1, np.random.default_rng(0)
        )


def test_collator_masks_depend_only_on_seed_and_step():
    collate = MaskCollator(Gen3D(GRID), seed=5)
    items = [((torch.zeros(1, 2, 2, 2), 0), SampleKey(i, 0, 7)) for i in range(4)]
    a, b = collate(items), collate(list(reversed(items)))
    assert torch.equal(a.masks.context.values, b.masks.context.values)
    other = collate([((torch.zeros(1, 2, 2, 2), 0), SampleKey(i, 0, 8)) for i in range(4)])
    assert not torch.equal(a.masks.context.values, other.masks.context.values)
