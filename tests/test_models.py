"""Encoders, predictor and EMA: shapes over the registry, packing, leaks, reference numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepalab.data.sampling import SampleKey
from jepalab.kernels.attention import attention
from jepalab.methods.build import build_experiment
from jepalab.models import (
    EMATarget,
    MaskedPredictor,
    create_encoder,
    create_predictor,
    ema_momentum,
    list_encoders,
)
from jepalab.models.layers import sincos_2d
from jepalab.ragged import Ragged

SMALL = [n for n in list_encoders() if n.startswith(("vit_tiny", "vit_small", "vit_base"))]
LARGE = [n for n in list_encoders("vit_*") if n not in SMALL]  # ConvNeXt: test_convnext.py


def test_registry_lists_every_vit_size_and_patch():
    for size in ("tiny", "small", "base", "large", "huge"):
        for patch in (14, 16):
            assert f"vit_{size}_patch{patch}" in list_encoders()
    with pytest.raises(ValueError, match="unknown encoder 'vit_tinny_patch16'"):
        create_encoder("vit_tinny_patch16")


@pytest.mark.parametrize("name", SMALL)
def test_encoder_shapes(name):
    patch = int(name.rsplit("patch", 1)[1])
    enc = create_encoder(name, img_size=2 * patch, depth=2)  # 2x2 grid; width/heads as named
    x = torch.randn(3, 3, 2 * patch, 2 * patch)
    assert enc(x).shape == (3, 4, enc.embed_dim)
    keep = Ragged.from_sequences([[0], [1, 2, 3], [0, 3]])
    assert enc(x, keep).shape == (6, enc.embed_dim)


@pytest.mark.parametrize("name", LARGE)
def test_large_encoder_shapes_on_meta_device(name):
    """Full-size large/huge models, shape-checked without allocating their weights."""
    with torch.device("meta"):
        enc = create_encoder(name, img_size=224)
        out = enc(torch.empty(2, 3, 224, 224))
    grid = 224 // int(name.rsplit("patch", 1)[1])
    assert out.shape == (2, grid * grid, enc.embed_dim)
    expected = {"large": (1024, 24), "huge": (1280, 32), "giant": (1408, 40)}
    expected = expected[name.split("_")[1]]
    assert (enc.embed_dim, len(enc.blocks)) == expected


def test_pos_embed_is_2d_sincos_with_row_major_grid():
    pe = sincos_2d(8, (2, 3))
    assert pe.shape == (6, 8)
    # first half encodes the column: equal for tokens in the same column
    assert torch.allclose(pe[0, :4], pe[3, :4]) and not torch.allclose(pe[0, 4:], pe[3, 4:])
    assert torch.allclose(pe[0, 4:], pe[2, 4:]) and not torch.allclose(pe[0, :4], pe[2, :4])


@pytest.fixture
def tiny_encoder():
    return create_encoder("vit_tiny_patch16", img_size=32, patch_size=4, depth=2, embed_dim=48)


def test_context_encoder_sees_only_kept_patches(tiny_encoder):
    """No information leak: pixels of dropped patches cannot change kept-token features."""
    x = torch.randn(2, 3, 32, 32)
    keep = Ragged.from_sequences([[0, 1, 9, 63], [5, 6, 7, 8, 20]])
    before = tiny_encoder(x, keep)
    x2 = x.clone()
    x2[:, :, 16:, 16:] = 100.0  # patches (rows 4-7, cols 4-7): not kept except 63 of sample 0
    after = tiny_encoder(x2, keep)
    assert not torch.allclose(before[:4], after[:4])  # sample 0 keeps patch 63
    torch.testing.assert_close(before[4:], after[4:], rtol=0, atol=0)


def test_packed_batch_equals_samples_run_alone(tiny_encoder):
    x = torch.randn(3, 3, 32, 32)
    seqs = [[0, 2, 4, 6, 8], [1, 3], [10, 20, 30, 40, 50, 60, 61]]
    packed = tiny_encoder(x, Ragged.from_sequences(seqs))
    alone = [tiny_encoder(x[i : i + 1], Ragged.from_sequences([s])) for i, s in enumerate(seqs)]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)


def test_keeping_every_patch_equals_dense_forward(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    keep = Ragged.from_dense(torch.arange(64).repeat(2, 1))
    torch.testing.assert_close(
        tiny_encoder(x, keep), tiny_encoder(x).reshape(-1, 48), rtol=1e-5, atol=1e-5
    )


def _reference_predictor(p: MaskedPredictor, ctx_feats, context: Ragged, targets: Ragged):
    """Independent dense re-implementation of the I-JEPA predictor forward, one sequence at
    a time: [embed(ctx) + pos, mask_token + pos(targets)] -> blocks -> norm -> proj."""
    pos = p.predictor_pos_embed[0]
    per_sample = targets.num_seqs // context.num_seqs
    ctx_seqs = torch.split(ctx_feats, context.lengths.tolist())
    outs = []
    for s, tgt in enumerate(targets.sequences()):
        b = s // per_sample
        x = torch.cat(
            [
                p.predictor_embed(ctx_seqs[b]) + pos[context.sequences()[b]],
                p.mask_tokens[0] + pos[tgt],
            ]
        )[None]
        for blk in p.predictor_blocks:
            h = blk.norm1(x)
            qkv = blk.attn.qkv(h).reshape(1, x.shape[1], 3, blk.attn.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            y = (a.softmax(-1) @ v).transpose(1, 2).reshape(1, x.shape[1], -1)
            x = x + blk.attn.proj(y)
            x = x + blk.mlp(blk.norm2(x))
        outs.append(p.predictor_proj(p.predictor_norm(x[0, -len(tgt) :])))
    return torch.cat(outs)


@pytest.fixture
def small_predictor() -> MaskedPredictor:
    return create_predictor(
        "masked_vit_predictor",
        grid_size=(4, 4),
        encoder_dim=24,
        embed_dim=16,
        depth=2,
        num_heads=2,
    )


def test_predictor_matches_reference_forward(small_predictor):
    p = small_predictor
    context = Ragged.from_sequences([[0, 1, 2, 5], [3, 7, 8]])
    targets = Ragged.from_sequences([[10, 11], [12], [0, 4, 5], [15]])  # 2 blocks per sample
    feats = torch.randn(context.total, 24)
    out = p(feats, context, targets)
    assert out.shape == (targets.total, 24)
    torch.testing.assert_close(
        out, _reference_predictor(p, feats, context, targets), rtol=1e-5, atol=1e-5
    )


def test_target_blocks_do_not_see_each_other(small_predictor):
    p = small_predictor
    context = Ragged.from_sequences([[0, 1, 2]])
    feats = torch.randn(3, 24)
    a = p(feats, context, Ragged.from_sequences([[10, 11], [12]]))
    b = p(feats, context, Ragged.from_sequences([[10, 11], [5, 6, 7]]))
    # identical up to float reordering (the padded attention length differs)
    torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=1e-6)


def test_ema_momentum_schedule_endpoints():
    assert ema_momentum(0, 1000) == pytest.approx(0.996)
    assert ema_momentum(500, 1000) == pytest.approx(0.998)
    assert ema_momentum(1000, 1000) == pytest.approx(1.0)
    assert ema_momentum(2000, 1000) == pytest.approx(1.0)


def test_ema_update_is_lerp_and_target_gets_no_gradient(tiny_encoder):
    target = EMATarget(tiny_encoder)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in tiny_encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    target.update(tiny_encoder, momentum=0.9)
    for t, b, o in zip(target.parameters(), before, tiny_encoder.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    x = torch.randn(2, 3, 32, 32)
    loss = target(x).sum() + tiny_encoder(x).sum()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    target.train()
    assert not target.training  # the target is never put in training mode
    frozen = [p.clone() for p in target.parameters()]
    target.update(tiny_encoder, momentum=1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, target.parameters(), strict=True))


@pytest.mark.parametrize("layout_lengths", [[5, 5, 5], [1, 7, 3, 2], [9]])
def test_varlen_attention_matches_float64_reference(layout_lengths):
    from jepalab.kernels.attention import VarlenLayout

    layout = VarlenLayout.from_lengths(torch.tensor(layout_lengths))
    q, k, v = (torch.randn(layout.total, 2, 8, requires_grad=True) for _ in range(3))
    out = attention(q, k, v, layout, backend="sdpa")
    ref = attention(*(t.double() for t in (q, k, v)), layout, backend="math")
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # per sequence it is ordinary attention
    start = 0
    for n in layout_lengths:
        sl = slice(start, start + n)
        dense = F.scaled_dot_product_attention(*(t[sl].transpose(0, 1)[None] for t in (q, k, v)))[
            0
        ].transpose(0, 1)
        torch.testing.assert_close(out[sl], dense, rtol=1e-5, atol=1e-5)
        start += n
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_stochastic_depth_drops_whole_sequences():
    from jepalab.kernels.attention import VarlenLayout
    from jepalab.models.layers import drop_path

    layout = VarlenLayout.from_lengths(torch.tensor([3, 4, 2, 5] * 8))
    out = drop_path(torch.ones(layout.total, 4), 0.5, True, layout)
    for seq in torch.split(out, layout.lengths.tolist()):
        assert (seq == seq[0, 0]).all()  # kept (x2) or dropped (0) as a whole
    assert set(out.unique().tolist()) <= {0.0, 2.0}


def test_predictor_loads_checkpoints_with_the_old_single_mask_token(small_predictor):
    state = small_predictor.state_dict()
    old = {k: v for k, v in state.items() if k != "mask_tokens"}
    old["mask_token"] = torch.randn(1, 1, small_predictor.embed_dim)
    fresh = create_predictor(
        "masked_vit_predictor",
        grid_size=(4, 4),
        encoder_dim=24,
        embed_dim=16,
        depth=2,
        num_heads=2,
    )
    fresh.load_state_dict(old)  # strict: the old key is renamed, nothing is left over
    torch.testing.assert_close(fresh.mask_tokens, old["mask_token"].reshape(1, -1))


def test_vit_averages_its_last_layers_for_targets():
    """``last_layers=L``: the mean of the last L blocks' outputs, each layer-normed without
    affine (data2vec-style targets, an I-JEPA target ablation); L=1 is the plain output."""
    torch.manual_seed(0)
    vit = create_encoder(
        "vit_tiny_patch16", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    hooks = [blk.register_forward_hook(lambda m, i, o: outputs.append(o)) for blk in vit.blocks]
    with torch.no_grad():
        assert torch.equal(vit(x, last_layers=1), vit(x))
        outputs.clear()
        averaged = vit(x, last_layers=2)
    for h in hooks:
        h.remove()
    expected = sum(F.layer_norm(o, (32,)) for o in outputs[1:]) / 2
    torch.testing.assert_close(averaged, expected)
    with pytest.raises(ValueError, match="last_layers"):
        vit(x, last_layers=4)


def test_target_layers_config(tiny_cfg, tiny_convnext_cfg):
    tiny_cfg.method.target_layers = 2
    exp = build_experiment(tiny_cfg)
    batch = exp.collate_fn([(exp.dataset[i], SampleKey(i, 0, 0)) for i in range(4)])
    full = exp.method.target_encoder(batch.images)
    assert not torch.allclose(exp.method.target_features(batch.images), full)
    assert torch.isfinite(exp.method(batch).loss)
    tiny_convnext_cfg.method.target_layers = 2  # a ViT option only
    with pytest.raises(ValueError, match="target_layers"):
        build_experiment(tiny_convnext_cfg)
