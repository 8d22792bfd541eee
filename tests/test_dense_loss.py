"""V-JEPA 2.1's dense predictive loss: encoder levels, the context head, distance weights, the
λ ramp, and the loss itself against a direct per-sequence computation; exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jepalab.config import compose_config
from jepalab.data.sampling import SampleKey
from jepalab.errors import CheckpointError
from jepalab.eval.surprise import future_masks, window_surprise
from jepalab.masks import MultiBlock3DMaskGenerator
from jepalab.methods.build import build_experiment
from jepalab.methods.dense import context_distance_weights, grid_coordinates, ramped_weight
from jepalab.models.predictor import MaskedPredictor
from jepalab.models.vit import VisionTransformer, distillation_levels
from jepalab.runs import load_run
from jepalab.train.setup import build_trainer

from .conftest import TINY_VIDEO_OVERRIDES

DENSE = [
    "method=vjepa2_1",
    "method.dense_levels=2",  # the tiny encoder has 2 blocks
    "method.context_loss_ramp=[0,0]",
]


@pytest.fixture
def dense_cfg(tmp_path):
    return compose_config(
        [*TINY_VIDEO_OVERRIDES, *DENSE, f"run_dir={tmp_path / 'run'}"],
        experiment="vjepa_moving_digits",
    )


def test_levels_are_v_jepa_2_1s_blocks():
    assert distillation_levels(12, 4) == [2, 5, 8, 11]
    assert distillation_levels(24, 4) == [5, 11, 17, 23]  # ViT-L
    assert distillation_levels(40, 4) == [9, 19, 29, 39]  # ViT-g
    assert distillation_levels(48, 4) == [11, 23, 37, 47]  # their table, not the rule
    assert distillation_levels(4, 4) == [0, 1, 2, 3] and distillation_levels(12, 1) == [11]
    with pytest.raises(ValueError, match="method.dense_levels=5 must be in 1..4"):
        distillation_levels(4, 5)


def test_the_ramp_is_linear_warmup_then_hold():
    ramp = (15000, 30000)
    assert [ramped_weight(s, 0.5, ramp) for s in (0, 14999, 15000, 22500, 30000, 10**6)] == [
        0.0,
        0.0,
        0.0,
        0.25,
        0.5,
        0.5,
    ]
    assert ramped_weight(0, 0.5, (0, 0)) == 0.5
    with pytest.raises(ValueError, match="context_loss_ramp"):
        ramped_weight(0, 0.5, (10, 5))


def test_vit_levels_are_each_blocks_normed_output_side_by_side():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=3,
                            num_heads=2).eval()  # fmt: skip
    x = torch.randn(2, 1, 16, 16)
    outputs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in vit.blocks]
    features = vit(x, levels=[0, 2])
    for h in hooks:
        h.remove()
    assert features.shape == (2, 16, 64)
    first = F.layer_norm(outputs[0], (32,)).reshape(2, 16, 32)
    torch.testing.assert_close(features[..., :32], first)
    torch.testing.assert_close(features[..., 32:], vit(x))  # the last level: the usual output
    with pytest.raises(ValueError, match="levels"):
        vit(x, levels=[3])


def test_distance_weights_against_brute_force():
    grid = (2, 4, 4)
    masks = MultiBlock3DMaskGenerator(grid)(3, np.random.default_rng(0))
    copies = masks.context_copies()
    weights = context_distance_weights(copies, masks.targets, grid)
    small_chunks = context_distance_weights(copies, masks.targets, grid, chunk_elements=7)
    assert torch.equal(weights, small_chunks)
    expected = []
    for ctx, tgt in zip(copies.sequences(), masks.targets.sequences(), strict=True):
        for c in grid_coordinates(ctx, grid).tolist():
            d = min(math.dist(c, t) for t in grid_coordinates(tgt, grid).tolist())
            expected.append(1 / math.sqrt(max(d, 1.0)))
    torch.testing.assert_close(weights, torch.tensor(expected))
    assert weights.max() == 1.0  # a context token next to the hidden region


def test_the_context_head_leaves_the_target_predictions_alone():
    torch.manual_seed(0)
    kwargs = dict(grid_size=(1, 4, 4), encoder_dim=8, embed_dim=16, depth=1, num_heads=2)
    kwargs["num_mask_tokens"] = 2
    plain = MaskedPredictor(**kwargs)
    dense = MaskedPredictor(**kwargs, predict_context=True)
    dense.load_state_dict(plain.state_dict(), strict=False)
    masks = MultiBlock3DMaskGenerator((1, 4, 4))(2, np.random.default_rng(1))
    features = torch.randn(masks.context.total, 8)
    args = (features, masks.context, masks.targets, masks.target_mask_ids())
    targets, contexts = dense.forward_dense(*args)
    torch.testing.assert_close(targets, plain(*args))
    assert contexts.shape == (masks.context_copies().total, 8)
    with pytest.raises(ValueError, match="predict_context=True"):
        plain.forward_dense(*args)
    wide = MaskedPredictor(**kwargs, levels=3)
    assert wide(torch.randn(masks.context.total, 24), *args[1:]).shape[-1] == 24


def _reference_loss(method, batch) -> float:
    """The dense loss written out per (sample, mask configuration): L1 of the masked tokens
    plus λ times the distance-weighted L1 of the context tokens, each a token mean per
    configuration, then the mean over configurations (V-JEPA 2.1 ``loss_fn``)."""
    masks = batch.masks
    with torch.no_grad():
        feats = method.target_encoder(batch.images, levels=method.levels)
        ctx_feats = method.context_encoder(batch.images, keep=masks.context, levels=method.levels)
        inputs = (ctx_feats, masks.context, masks.targets, masks.target_mask_ids())
        pred_t, pred_c = method.predictor.forward_dense(*inputs)
    grid = method.context_encoder.grid_size
    d = feats.shape[-1] // len(method.levels)

    def normed(x):
        return F.layer_norm(x.reshape(-1, len(method.levels), d), (d,)).reshape(x.shape)

    ids = masks.target_mask_ids().tolist()
    sums = {"t": [0.0, 0.0], "c": [0.0, 0.0]}
    counts = {"t": [0, 0], "c": [0, 0]}
    t_off = c_off = 0
    copies = masks.context_copies()
    for s, (tgt, ctx) in enumerate(zip(masks.targets.sequences(), copies.sequences(), strict=True)):
        sample = s // masks.num_targets
        target = normed(feats[sample, tgt])
        err = (pred_t[t_off : t_off + len(tgt)] - target).abs().mean(-1)
        sums["t"][ids[s]] += err.sum().item()
        counts["t"][ids[s]] += len(tgt)
        t_off += len(tgt)
        context = normed(feats[sample, ctx])
        err = (pred_c[c_off : c_off + len(ctx)] - context).abs().mean(-1)
        cc, tc = grid_coordinates(ctx, grid).tolist(), grid_coordinates(tgt, grid).tolist()
        w = [1 / math.sqrt(max(1.0, min(math.dist(a, b) for b in tc))) for a in cc]
        sums["c"][ids[s]] += (err * torch.tensor(w)).sum().item()
        counts["c"][ids[s]] += len(ctx)
        c_off += len(ctx)
    mean = {k: np.mean([sums[k][i] / counts[k][i] for i in range(2)]) for k in sums}
    return mean["t"] + method.context_loss_weight * mean["c"]


def test_the_dense_loss_is_v_jepa_2_1s(dense_cfg):
    exp = build_experiment(dense_cfg)
    method = exp.method
    assert method.levels == [0, 1] and method.predictor.levels == 2
    keys = [SampleKey(i, 0, 0, i, 4) for i in range(4)]
    items = [(exp.dataset[k.index], k) for k in keys]
    batch = exp.collate_fn(items)
    with torch.no_grad():
        out = method(batch)
    assert out.loss.item() == pytest.approx(_reference_loss(method, batch), rel=1e-5)
    assert out.metrics["context_loss_weight"] == 0.5
    expected = out.metrics["masked_loss"] + 0.5 * out.metrics["context_loss"]
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-6)
    parts = [exp.collate_fn(items[i : i + 2]) for i in (0, 2)]
    with torch.no_grad():
        shares = [method(p).loss for p in parts]  # accumulation / DDP shares add up exactly
    assert float(sum(shares)) == pytest.approx(out.loss.item(), rel=1e-6)


def test_dense_training_resumes_exactly(dense_cfg, tmp_path):
    dense_cfg.method.context_loss_ramp = [2, 4]  # the ramp crosses the checkpoint
    dense_cfg.trainer.ckpt_every = 3
    dense_cfg.run_dir = str(tmp_path / "straight")
    dense_cfg.trainer.max_steps = 6
    straight = build_trainer(dense_cfg, build_experiment(dense_cfg))
    expected = straight.fit()
    dense_cfg.run_dir = str(tmp_path / "halves")
    dense_cfg.trainer.max_steps = 3
    build_trainer(dense_cfg, build_experiment(dense_cfg)).fit()
    dense_cfg.trainer.max_steps = 6
    resumed = build_trainer(dense_cfg, build_experiment(dense_cfg))
    assert resumed.fit() == expected[3:]
    for (name, a), b in zip(
        straight.method.state_dict().items(), resumed.method.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    loaded = load_run(tmp_path / "halves").method  # and the run loads back as it trained
    assert loaded.levels == [0, 1] and loaded.predictor.predictor_proj_context is not None
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[name]), name


def test_the_surprise_of_a_dense_run_is_its_last_levels_error(dense_cfg):
    """``jepalab eval surprise`` on a V-JEPA 2.1 run: the predictor reads every level of the
    context (it once got the last one only and failed on the shapes), and the surprise is the
    L1 error of the last level, the encoder's output that V-JEPA predicts."""
    method = build_experiment(dense_cfg).method.eval()
    grid = method.context_encoder.grid_size
    torch.manual_seed(0)
    windows = torch.randn(2, 1, dense_cfg.encoder.num_frames, *[dense_cfg.encoder.img_size] * 2)
    with torch.no_grad():
        surprise = window_surprise(method, windows, context_frames=2)  # 1 of 2 tubelet steps
        masks = future_masks(grid, 1, 2, mask_id=0)
        levels = method.target_encoder(windows, levels=method.levels)
        d = levels.shape[-1] // len(method.levels)
        split = int(np.prod(grid[1:]))  # the tokens of the first tubelet step
        target = F.layer_norm(levels[:, split:, -d:], (d,))  # the last level, layer-normed
        context = method.context_encoder(windows, keep=masks.context, levels=method.levels)
        prediction = method.predictor(
            context, masks.context, masks.targets, masks.target_mask_ids()
        )[:, -d:]
    expected = (prediction.reshape(2, -1, d) - target).abs().mean((1, 2))
    assert prediction.shape[0] == target.shape[0] * target.shape[1]
    assert torch.allclose(surprise, expected, rtol=1e-5, atol=1e-6)


def test_jepalab_eval_surprise_scores_a_dense_run_it_trained(dense_cfg, tmp_path):
    """The command on the checkpoint the Trainer wrote (the crash of 2026-12-04 was on such
    runs): it loads the dense run, scores the trained and untrained models, and the trained
    model's clip scores are finite."""
    import json

    from jepalab.cli import main as cli_main

    dense_cfg.trainer.max_steps = dense_cfg.trainer.ckpt_every = 2
    build_trainer(dense_cfg, build_experiment(dense_cfg)).fit()
    out = tmp_path / "surprise.json"
    args = ["pairs=1", "events=[vanish,teleport]", "clip_frames=8", "progress=false"]
    assert cli_main(["eval", "surprise", f"ckpt={dense_cfg.run_dir}", f"out={out}", *args]) == 0
    report = json.loads(out.read_text())
    trained = report["metrics"]["trained (step 2)"]["max"]["all"]
    assert trained["pairs"] == 4 and 0.0 <= trained["pairwise_accuracy"] <= 1.0
    curves = np.asarray(report["curves"]["trained (step 2)"]["possible"])
    assert curves.size and np.isfinite(curves).all()


def test_bad_combinations_are_refused(dense_cfg):
    dense_cfg.method.target_layers = 2
    with pytest.raises(ValueError, match="target_layers and method.dense_levels"):
        build_experiment(dense_cfg)
    convnext = compose_config(
        ["encoder=convnextv2_atto", "method.dense_levels=2"], experiment="ijepa_digits_convnext"
    )
    with pytest.raises(ValueError, match="dense_levels=2 needs an encoder"):
        build_experiment(convnext)


def test_a_dense_predictor_is_not_exported_as_an_official_one(dense_cfg, tmp_path):
    from jepalab.interop.checkpoint import LAYOUTS
    from jepalab.interop.exportable import check_exportable
    from jepalab.specs import spec_of

    exp = build_experiment(dense_cfg)
    view = {
        "encoder": exp.method.context_encoder.state_dict(),
        "predictor": exp.method.predictor.state_dict(),
        "config": {
            "predictor": spec_of(exp.method.predictor),
            "encoder": spec_of(exp.method.context_encoder),
        },
    }
    with pytest.raises(CheckpointError, match="V-JEPA 2.1's dense predictor"):
        check_exportable(view, LAYOUTS["vjepa"])


def test_the_default_objective_is_unchanged(tiny_video_cfg):
    """Without the options nothing of the dense loss is built or logged."""
    exp = build_experiment(tiny_video_cfg)
    assert exp.method.levels is None and exp.method.predictor.predictor_proj_context is None
    keys = [SampleKey(i, 0, 0, i, 2) for i in range(2)]
    out = exp.method(exp.collate_fn([(exp.dataset[k.index], k) for k in keys]))
    assert "context_loss" not in out.metrics and "masked_loss" not in out.metrics
