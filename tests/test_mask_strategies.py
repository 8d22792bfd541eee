"""I-JEPA Table 6's masking strategies (rasterized, block, random): each mask has the paper's
definition on the token grid, and each trains through the one Trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jepalab.cli.train import train
from jepalab.config import compose_config
from jepalab.masks import BlockMaskGenerator, RandomMaskGenerator, RasterizedMaskGenerator
from jepalab.masks.build import build_mask_generator

from .conftest import TINY_OVERRIDES

GRID = (8, 8)  # the digits recipe: 32 px canvas, 4 px patches
N = GRID[0] * GRID[1]


def _grid_mask(indices: torch.Tensor) -> np.ndarray:
    mask = np.zeros(N, dtype=bool)
    mask[indices.numpy()] = True
    return mask.reshape(GRID)


def _disjoint_cover(context: np.ndarray, targets: list[np.ndarray]) -> bool:
    """Context and targets tile the grid: every token in exactly one of them."""
    return bool((np.sum([context, *targets], axis=0) == 1).all())


def test_rasterized_one_quadrant_predicts_the_other_three():
    gen = RasterizedMaskGenerator(GRID)
    masks = gen(64, np.random.default_rng(0))
    assert masks.num_targets == 3 and masks.targets.num_seqs == 3 * 64
    quadrants = [q.tobytes() for q in gen.quadrants()]
    seen = set()
    targets = masks.targets.sequences()
    for b, ctx in enumerate(masks.context.sequences()):
        context = _grid_mask(ctx)
        blocks = [_grid_mask(t) for t in targets[3 * b : 3 * b + 3]]
        assert context.tobytes() in quadrants and all(t.tobytes() in quadrants for t in blocks)
        assert _disjoint_cover(context, blocks)
        seen.add(quadrants.index(context.tobytes()))
    assert seen == {0, 1, 2, 3}  # every quadrant serves as the context
    odd = RasterizedMaskGenerator((5, 7)).quadrants()
    assert sorted(int(q.sum()) for q in odd) == [6, 8, 9, 12]  # split at H // 2, W // 2


def test_block_one_large_rectangle_and_its_complement():
    gen = BlockMaskGenerator(GRID, target_scale=(0.6, 0.6))
    masks = gen(200, np.random.default_rng(1))
    areas = []
    for ctx, tgt in zip(masks.context.sequences(), masks.targets.sequences(), strict=True):
        target = _grid_mask(tgt)
        rows, cols = np.nonzero(target)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert target.sum() == h * w and 0.75 - 0.3 <= h / w <= 1.5 + 0.5  # a rectangle
        assert _disjoint_cover(_grid_mask(ctx), [target])
        areas.append(target.sum() / N)
    assert 0.55 < np.mean(areas) < 0.65  # scale 0.6, sides rounded to whole tokens
    assert len({tuple(t.tolist()) for t in masks.targets.sequences()}) > 10  # placed at random


def test_random_sixty_percent_of_the_tokens_and_not_a_block():
    gen = RandomMaskGenerator(GRID, target_scale=(0.6, 0.6))
    masks = gen(100, np.random.default_rng(2))
    assert (masks.targets.lengths == round(0.6 * N)).all()
    assert (masks.context.lengths == N - round(0.6 * N)).all()
    hits = np.zeros(N)
    rectangles = 0
    for ctx, tgt in zip(masks.context.sequences(), masks.targets.sequences(), strict=True):
        target = _grid_mask(tgt)
        assert _disjoint_cover(_grid_mask(ctx), [target])
        rows, cols = np.nonzero(target)
        rectangles += target.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        hits += target.reshape(-1)
    assert rectangles == 0  # scattered patches, not a block
    assert hits.min() > 40 and hits.max() < 80  # every token ~60 times of 100: uniform


def test_masks_are_a_function_of_the_rng():
    for gen in (RasterizedMaskGenerator(GRID), BlockMaskGenerator(GRID), RandomMaskGenerator(GRID)):
        a, b = gen(8, np.random.default_rng(5)), gen(8, np.random.default_rng(5))
        assert torch.equal(a.context.values, b.context.values)
        assert torch.equal(a.targets.values, b.targets.values)


def test_config_errors_name_the_key():
    cfg = compose_config(["mask=rasterized", "mask.num_targets=4"]).mask
    with pytest.raises(ValueError, match=r"mask.name=rasterized has 3 target.*mask.num_targets=4"):
        build_mask_generator(cfg, GRID)
    with pytest.raises(ValueError, match="mask.num_targets=2"):
        build_mask_generator(compose_config(["mask=random", "mask.num_targets=2"]).mask, GRID)
    with pytest.raises(ValueError, match="mask.min_keep"):
        RandomMaskGenerator(GRID, target_scale=(0.9, 0.9), min_keep=10)
    with pytest.raises(ValueError, match="grid is"):
        build_mask_generator(compose_config(["mask=block"]).mask, (2, 8, 8))
    with pytest.raises(RuntimeError, match="lower mask.target_scale or mask.min_keep"):
        BlockMaskGenerator((4, 4), target_scale=(1.0, 1.0), min_keep=8)(1, np.random.default_rng(0))


@pytest.mark.parametrize("strategy", ["rasterized", "block", "random"])
def test_each_strategy_trains_through_the_trainer(strategy, tmp_path):
    """Two steps of the digits recipe with the strategy's masks: the loss is finite and the
    run records the strategy it trained with."""
    run_dir = tmp_path / strategy
    cfg = compose_config(
        [
            *TINY_OVERRIDES,
            f"mask={strategy}",
            f"run_dir={run_dir}",
            "trainer.max_steps=2",
            "eval.probe=none",
        ]
    )
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"]) and summary["final_loss"] > 0
    assert json.loads((run_dir / "config.json").read_text())["mask"]["name"] == strategy
