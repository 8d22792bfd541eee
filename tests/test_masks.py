"""Multi-block masks: block statistics, no overlap, nothing dropped, determinism, parity."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from jepalab.data.sampling import SampleKey
from jepalab.masks import MaskCollator, MultiBlockMaskGenerator
from jepalab.ragged import Ragged, segment_arange

GRID = (14, 14)  # ViT/16 at 224 px


def _bbox(indices: torch.Tensor, width: int) -> tuple[int, int, int]:
    rows, cols = indices // width, indices % width
    h = int(rows.max() - rows.min() + 1)
    w = int(cols.max() - cols.min() + 1)
    return h, w, int(rows.max())


def test_target_blocks_are_rectangles_within_scale_and_aspect_ranges():
    gen = MultiBlockMaskGenerator(GRID)
    rng = np.random.default_rng(0)
    areas, aspects = [], []
    for _ in range(50):
        masks = gen(8, rng)
        for block in masks.targets.sequences():
            h, w, _ = _bbox(block, GRID[1])
            assert block.numel() == h * w  # a full rectangle
            areas.append(h * w / (GRID[0] * GRID[1]))
            aspects.append(h / w)
    areas, aspects = np.array(areas), np.array(aspects)
    # sizes are rounded to whole patches: allow half a patch on each side
    n = GRID[0] * GRID[1]
    assert areas.min() >= (np.sqrt(0.15 * n * 0.75) - 0.5) * (np.sqrt(0.15 * n / 1.5) - 0.5) / n
    assert areas.max() <= (np.sqrt(0.2 * n * 1.5) + 0.5) * (np.sqrt(0.2 * n / 0.75) + 0.5) / n
    assert 0.15 < areas.mean() < 0.2
    assert aspects.min() >= 0.5 and aspects.max() <= 2.0
    assert 0.85 < np.median(aspects) < 1.4


def test_context_excludes_targets_and_keeps_min_tokens():
    gen = MultiBlockMaskGenerator(GRID)
    rng = np.random.default_rng(1)
    for _ in range(30):
        masks = gen(8, rng)
        targets = masks.targets.sequences()
        for b, ctx in enumerate(masks.context.sequences()):
            assert ctx.numel() >= gen.min_keep
            assert torch.equal(ctx, ctx.sort().values) and ctx.unique().numel() == ctx.numel()
            for block in targets[b * 4 : (b + 1) * 4]:
                assert not np.intersect1d(ctx.numpy(), block.numpy()).size


def test_no_token_is_dropped_by_default():
    """Without trimming, the context is exactly the (square) context block minus the targets:
    with overlap allowed and a full-grid context block, every sample keeps all 196 tokens."""
    gen = MultiBlockMaskGenerator(GRID, context_scale=(1.0, 1.0), allow_overlap=True)
    masks = gen(16, np.random.default_rng(0))
    assert (masks.context.lengths == 196).all()
    # with overlap allowed, every context is its whole square block, whatever its size
    gen = MultiBlockMaskGenerator(GRID, allow_overlap=True)
    masks = gen(32, np.random.default_rng(0))
    for ctx in masks.context.sequences():
        h, w, _ = _bbox(ctx, GRID[1])
        assert h == w and ctx.numel() == h * w
    # and the default keeps a different number of tokens per sample (nothing cut to the min)
    lengths = MultiBlockMaskGenerator(GRID)(16, np.random.default_rng(0)).context.lengths
    assert lengths.max() > lengths.min()


def test_trim_to_batch_min_is_the_reference_behaviour():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    full = MultiBlockMaskGenerator(GRID, reference_quirks=True)(16, rng_a)
    trimmed = MultiBlockMaskGenerator(GRID, reference_quirks=True, trim_to_batch_min=True)(
        16, rng_b
    )
    assert trimmed.context.is_uniform and trimmed.targets.is_uniform
    assert trimmed.context.max_len == int(full.context.lengths.min())
    for f, t in zip(full.context.sequences(), trimmed.context.sequences(), strict=True):
        assert torch.equal(f[: t.numel()], t)  # the reference keeps the first (top) tokens
    assert trimmed.context.total < full.context.total


def test_reference_quirks_never_start_a_block_on_the_last_row():
    rng = np.random.default_rng(0)
    quirky = MultiBlockMaskGenerator(GRID, reference_quirks=True)
    ours = MultiBlockMaskGenerator(GRID)
    last_quirky = max(
        _bbox(b, 14)[2] for _ in range(40) for b in quirky(8, rng).targets.sequences()
    )
    last_ours = max(_bbox(b, 14)[2] for _ in range(40) for b in ours(8, rng).targets.sequences())
    assert last_quirky < 13 and last_ours == 13


def test_collator_masks_depend_only_on_seed_and_step():
    gen = MultiBlockMaskGenerator(GRID)
    items = [((torch.zeros(3, 224, 224), 0), SampleKey(i, 0, 7)) for i in range(4)]
    a = MaskCollator(gen, seed=5)(items).masks
    b = MaskCollator(gen, seed=5)(list(reversed(items))).masks
    assert torch.equal(a.context.values, b.context.values)
    other_step = [(s, SampleKey(k.index, 0, 8)) for s, k in items]
    c = MaskCollator(gen, seed=5)(other_step).masks
    assert not torch.equal(a.targets.values, c.targets.values)


def test_collator_drops_and_counts_unreadable_samples():
    gen = MultiBlockMaskGenerator((4, 4), min_keep=2)
    items = [((torch.zeros(1, 16, 16), 1), SampleKey(0, 0, 0)), (None, SampleKey(1, 0, 0))]
    batch = MaskCollator(gen, seed=0)(items)
    assert batch.images.shape[0] == 1 and batch.skipped == 1
    assert batch.masks.context.num_seqs == 1


def test_bad_mask_config_errors_name_the_key():
    with pytest.raises(ValueError, match="mask.target_scale"):
        MultiBlockMaskGenerator(GRID, target_scale=(0.3, 0.1))
    with pytest.raises(ValueError, match="mask.min_keep"):
        MultiBlockMaskGenerator((2, 2), min_keep=10)


def test_ragged_helpers():
    assert segment_arange(torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3])).tolist() == [
        5,
        6,
        9,
        10,
        11,
    ]
    r = Ragged.from_sequences([[3, 4, 5], [1], [7, 8]])
    assert r.lengths.tolist() == [3, 1, 2] and r.offsets.tolist() == [0, 3, 4, 6]
    assert r.seq_ids().tolist() == [0, 0, 0, 1, 2, 2]
    assert r.positions().tolist() == [0, 1, 2, 0, 0, 1]
    assert r.flat_index(10, seqs_per_row=2).tolist() == [3, 4, 5, 1, 17, 18]
    assert [s.tolist() for s in r.trimmed(1).sequences()] == [[3], [1], [7]]
    with pytest.raises(ValueError, match="equal-length"):
        r.to_dense()


def test_relaxed_context_is_counted_and_warned_about_rarely(caplog):
    # on a 4x4 grid four large targets leave fewer than 8 context tokens most of the time
    gen = MultiBlockMaskGenerator((4, 4), target_scale=(0.3, 0.4), min_keep=8)
    with caplog.at_level("WARNING", logger="jepalab.masks.multiblock"):
        batch = gen(64, np.random.default_rng(0))
    assert (batch.context.lengths >= 8).all()
    relaxed = gen.num_relaxed
    assert relaxed > 16
    warnings = [r for r in caplog.records if "below min_keep=8" in r.getMessage()]
    assert len(warnings) == int(np.log2(relaxed)) + 1  # at the 1st, 2nd, 4th, ... relaxation


# -- parity with the reference sampler -------------------------------------------------------
# An independent model of the reference collator, written from the formulas of
# facebookresearch/ijepa src/masks/multiblock.py (``MaskCollator._sample_block_size``,
# ``MaskCollator._sample_block_mask`` and the trimming in ``MaskCollator.__call__``), with the
# paper's scales (configs/in1k_vith14_ep300.yaml). Randomness comes from numpy, not torch: the
# comparisons are of distributions, or of block sizes given the same uniform draw.
PAPER = {"target": ((0.15, 0.2), (0.75, 1.5)), "context": ((0.85, 1.0), (1.0, 1.0))}


def _reference_block_size(u: float, grid: tuple[int, int], scale, aspect) -> tuple[int, int]:
    """``_sample_block_size`` given its one uniform draw ``u``: scale and aspect ratio both
    follow ``u``; the area is truncated to whole tokens *before* the square roots; the sides
    are rounded (Python's ``round``, half to even) and kept below the grid's height/width."""
    height, width = grid
    area = int(height * width * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
    return min(h, height - 1), min(w, width - 1)


def _reference_block(rng, grid, size, min_keep, allowed=()) -> np.ndarray:
    """``_sample_block_mask``: top in ``[0, H - h)``, left in ``[0, W - w)`` (the last row and
    column never start a block), the block intersected with the ``allowed`` regions, redrawn
    until *more* than ``min_keep`` tokens survive; every 20 failures drop the last region."""
    (height, width), (h, w) = grid, size
    failures = 0
    while True:
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        mask = np.zeros(grid, dtype=bool)
        mask[top : top + h, left : left + w] = True
        for region in allowed[: max(len(allowed) - failures // 20, 0)]:
            mask &= region
        if mask.sum() > min_keep:
            return mask
        failures += 1


def _reference_batch(rng, batch_size, grid, u_target, u_context, min_keep=10):
    """``__call__``: one target and one context size for the batch (target first), per sample
    4 target blocks then the context block outside them, every context and every target cut
    to the batch's shortest (keeping the first tokens in raster order)."""
    target_size = _reference_block_size(u_target, grid, *PAPER["target"])
    context_size = _reference_block_size(u_context, grid, *PAPER["context"])
    contexts, targets = [], []
    for _ in range(batch_size):
        blocks = [_reference_block(rng, grid, target_size, min_keep) for _ in range(4)]
        context = _reference_block(rng, grid, context_size, min_keep, [~b for b in blocks])
        contexts.append(np.flatnonzero(context))
        targets.extend(np.flatnonzero(b) for b in blocks)
    keep_context, keep_target = min(map(len, contexts)), min(map(len, targets))
    return [c[:keep_context] for c in contexts], [t[:keep_target] for t in targets]


class _FixedDraw:
    """A generator stand-in whose uniform draw is ``u``."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


class _RecordingRng:
    """``np.random.default_rng(seed)`` that records its uniform draws (the block sizes')."""

    def __init__(self, seed: int) -> None:
        self.rng, self.uniforms = np.random.default_rng(seed), []

    def random(self) -> float:
        self.uniforms.append(self.rng.random())
        return self.uniforms[-1]

    def __getattr__(self, name: str):
        return getattr(self.rng, name)


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (16, 16), (12, 20)])
def test_parity_block_sizes_are_the_references_for_every_draw(grid):
    gen = MultiBlockMaskGenerator(grid, reference_quirks=True)
    for u in np.linspace(0.0, 1.0, 2001)[:-1]:
        for scale, aspect in PAPER.values():
            expected = _reference_block_size(u, grid, scale, aspect)
            assert gen.block_size(_FixedDraw(u), scale, aspect) == expected, (u, scale)


def _row_coverage(sequences, grid: tuple[int, int]) -> np.ndarray:
    """``(H,)`` tokens per row, averaged over the sequences."""
    rows = np.concatenate([np.asarray(s) // grid[1] for s in sequences])
    return np.bincount(rows, minlength=grid[0]) / len(sequences)


@pytest.mark.parametrize(("grid", "min_keep"), [(GRID, 10), ((8, 8), 8)])
def test_parity_sampler_matches_the_reference_over_many_batches(grid, min_keep):
    """mask=multiblock_parity over 400 batches of 8, at 224 px / 16 and on a small grid whose
    contexts often come down to ``min_keep`` tokens: the same target blocks as the reference
    given the same uniform draws (exactly, its area truncation included: without it the
    blocks were 1.4% larger on average), and the same distributions of the context length
    after trimming and of the context's and targets' row coverage (means within 4 standard
    errors of the reference model's, drawn with an independent generator)."""
    gen = MultiBlockMaskGenerator(
        grid, min_keep=min_keep, trim_to_batch_min=True, reference_quirks=True
    )
    rng, ref_rng = _RecordingRng(0), np.random.default_rng(1)
    ours, ref = defaultdict(list), defaultdict(list)
    for _ in range(400):
        drawn = len(rng.uniforms)
        masks = gen(8, rng)
        u_target, u_context = rng.uniforms[drawn : drawn + 2]  # target size first, as the reference
        contexts, targets = _reference_batch(ref_rng, 8, grid, u_target, u_context, min_keep)
        assert masks.targets.lengths.tolist() == [len(t) for t in targets]
        assert masks.context.max_len > min_keep  # the reference asks for more than min_keep
        first = masks.targets.sequences()[0]
        assert _bbox(first, grid[1])[:2] == _reference_block_size(u_target, grid, *PAPER["target"])
        for stats, ctx, tgt in (
            (ours, masks.context.sequences(), masks.targets.sequences()),
            (ref, contexts, targets),
        ):
            stats["context tokens"].append([len(ctx[0])])
            stats["context rows"].append(_row_coverage(ctx, grid))
            stats["target rows"].append(_row_coverage(tgt, grid))
    for name in ours:
        a, b = np.array(ours[name]), np.array(ref[name])
        stderr = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
        assert (np.abs(a.mean(0) - b.mean(0)) <= 4 * stderr).all(), (name, a.mean(0), b.mean(0))
