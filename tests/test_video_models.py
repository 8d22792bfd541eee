"""Video ViT (tubelets, 3-D sincos / RoPE positions), the multi-context predictor, V-JEPA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jepalab import create_encoder, create_predictor
from jepalab.masks import MultiBlock3DMaskGenerator
from jepalab.masks.collator import MaskedBatch
from jepalab.methods import VJEPA
from jepalab.models.layers import TubeletEmbed, apply_rope, rope_angles, sincos_3d
from jepalab.models.layers.rope import GridRoPE
from jepalab.ragged import Ragged

T, S, P, TUB = 4, 16, 4, 2  # 4 frames of 16x16, 4x4 patches, 2-frame tubelets -> (2, 4, 4)


def _video_encoder(pos_embed: str, **kw):
    kw = dict(img_size=S, patch_size=P, in_chans=1, num_frames=T, tubelet_size=TUB) | kw
    return create_encoder(
        "vit_tiny_patch16", embed_dim=48, depth=2, num_heads=2, pos_embed=pos_embed, **kw
    ).eval()


def test_tubelet_grid_order_and_locality():
    embed = TubeletEmbed(S, P, num_frames=T, tubelet_size=TUB, in_chans=1, embed_dim=8)
    assert embed.grid_size == (2, 4, 4) and embed.num_patches == 32
    x = torch.randn(2, 1, T, S, S)
    base = embed(x)
    assert base.shape == (2, 32, 8)
    x2 = x.clone()
    x2[1, 0, 3, 5, 13] += 1.0  # frame 3 -> time step 1, row 1, column 3
    changed = (embed(x2) - base).abs().sum(-1) > 0
    assert changed[0].sum() == 0 and changed[1].nonzero().flatten().tolist() == [16 + 4 + 3]
    with pytest.raises(ValueError, match="num_frames"):
        embed(torch.randn(1, 1, 6, S, S))
    with pytest.raises(ValueError, match="tubelet_size"):
        TubeletEmbed(S, P, num_frames=5, tubelet_size=2)


def test_sincos_3d_layout_time_row_column():
    emb = sincos_3d(32, (2, 3, 4)).reshape(2, 3, 4, 32)
    # first half depends on time only, then a quarter on the row, a quarter on the column
    assert torch.allclose(emb[:, :1, :1, :16], emb[:, :, :, :16])
    assert torch.allclose(emb[:1, :, :1, 16:24], emb[:, :, :, 16:24])
    assert torch.allclose(emb[:1, :1, :, 24:], emb[:, :, :, 24:])
    assert not torch.allclose(emb[0, 0, 0], emb[1, 0, 0])


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    head_dim = 16
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)

    def score(pq, pk, reference_layout=False):
        angles = rope_angles(torch.tensor([pq, pk]), head_dim, reference_layout=reference_layout)
        cos, sin = angles.cos(), angles.sin()
        rq = apply_rope(q, cos[0], sin[0])
        rk = apply_rope(k, cos[1], sin[1])
        return float(rq @ rk)

    a = score([0, 1, 2], [1, 3, 0])
    assert a == pytest.approx(score([3, 2, 5], [4, 4, 3]), abs=1e-12)  # same offset
    assert a != pytest.approx(score([0, 1, 2], [1, 3, 1]), abs=1e-6)
    # the rotation preserves norms (the reference's .repeat layout does not)
    angles = rope_angles(torch.tensor([[3, 2, 5]]), head_dim)
    assert apply_rope(q, angles.cos()[0], angles.sin()[0]).norm() == pytest.approx(q.norm())
    ref = rope_angles(torch.tensor([[3, 2, 5]]), head_dim, reference_layout=True)
    assert not torch.allclose(ref, angles)
    # head_dim 16 over 3 axes rotates 3 x 4 channels; the last 4 are left alone
    assert (angles[0, 12:] == 0).all() and (angles[0, :12] != 0).any()
    assert GridRoPE((2, 4, 4), head_dim)(torch.tensor([5]))[0].shape == (1, 1, head_dim)


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_positions_follow_the_kept_indices_for_any_subset(pos_embed):
    torch.manual_seed(0)
    enc = _video_encoder(pos_embed)
    x = torch.randn(2, 1, T, S, S)
    dense = enc(x)  # (2, 32, 48)
    every = Ragged.from_dense(torch.arange(32).repeat(2, 1))
    torch.testing.assert_close(enc(x, every), dense.reshape(-1, 48), rtol=1e-5, atol=1e-5)
    # a subset in any order: each token's output follows its index, not its place in the list
    subset = torch.tensor([17, 3, 30, 8, 21])
    keep = Ragged.from_sequences([subset, subset.flip(0)])  # two contexts of sample 0
    out = enc(x[:1], keep)
    torch.testing.assert_close(out[:5].flip(0), out[5:], rtol=1e-5, atol=1e-5)
    # ... and is what the subset alone would produce: masked tubelets do not leak into it
    hidden = torch.ones(32)
    hidden[subset] = 0.0
    pixels = hidden.view(2, 4, 4).repeat_interleave(TUB, 0).repeat_interleave(P, 1)
    pixels = pixels.repeat_interleave(P, 2)  # (T, S, S): 1 on hidden tubelets
    x2 = x[:1] + 3.0 * torch.randn_like(x[:1]) * pixels
    torch.testing.assert_close(enc(x2, keep), out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(enc(x2), enc(x[:1]))


def test_several_contexts_per_sample_equal_separate_calls():
    enc = _video_encoder("rope")
    x = torch.randn(2, 1, T, S, S)
    a, b, c, d = (torch.tensor(s) for s in ([0, 5, 9], [1, 2, 3, 30], [7, 8], [31, 0, 4, 20, 6]))
    packed = enc(x, Ragged.from_sequences([a, b, c, d]))  # 2 contexts per sample
    first = enc(x, Ragged.from_sequences([a, c]))
    second = enc(x, Ragged.from_sequences([b, d]))
    torch.testing.assert_close(packed[:3], first[:3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[3:7], second[:4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[7:9], first[3:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the batch"):
        enc(x, Ragged.from_sequences([a, b, c]))


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    enc = _video_encoder("sincos").train()
    x = torch.randn(2, 1, T, S, S)
    keep = Ragged.from_sequences([torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3, 30])])
    enc(x, keep).square().sum().backward()
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.set_grad_checkpointing(True)
    enc(x, keep).square().sum().backward()
    for g, p in zip(plain, enc.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_predictor_packs_each_configuration_with_its_own_context_and_mask_token(pos_embed):
    torch.manual_seed(0)
    pred = create_predictor(
        "masked_vit_predictor",
        grid_size=(2, 4, 4),
        encoder_dim=24,
        embed_dim=16,
        depth=2,
        num_heads=2,
        num_mask_tokens=2,
        pos_embed=pos_embed,
    ).eval()
    ctx = Ragged.from_sequences([[0, 1, 2], [5, 6], [3, 4, 9, 10], [11]])
    tgt = Ragged.from_sequences([[20, 21], [7, 8, 30], [1], [2, 3]])
    feats = torch.randn(ctx.total, 24)
    ids = torch.tensor([0, 1, 0, 1])
    packed = pred(feats, ctx, tgt, ids)
    starts = ctx.offsets.tolist()
    alone = [
        pred(
            feats[starts[s] : starts[s + 1]],
            Ragged.from_sequences([ctx.sequences()[s]]),
            Ragged.from_sequences([tgt.sequences()[s]]),
            ids[s : s + 1],
        )
        for s in range(4)
    ]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)
    swapped = pred(feats, ctx, tgt, 1 - ids)
    assert not torch.allclose(packed, swapped)  # each configuration has its own mask token


def _tiny_vjepa(pos_embed="sincos"):
    enc = _video_encoder(pos_embed).train()
    gen = MultiBlock3DMaskGenerator(enc.grid_size)
    pred = create_predictor(
        "masked_vit_predictor",
        grid_size=enc.grid_size,
        encoder_dim=48,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_mask_tokens=gen.num_mask_tokens,
        pos_embed=pos_embed,
    )
    return VJEPA(enc, pred, loss_exp=1.0), gen


def test_vjepa_loss_averages_each_configuration_then_configurations():
    torch.manual_seed(0)
    method, gen = _tiny_vjepa()
    masks = gen(3, np.random.default_rng(0))
    batch = MaskedBatch(torch.randn(3, 1, T, S, S), torch.zeros(3, dtype=torch.long), 0, 0, masks)
    out = method(batch)
    # recompute by hand: L1 per configuration over its tokens, then the mean of the two
    target = method.targets(batch)
    context = method.context_encoder(batch.images, keep=masks.context)
    prediction = method.predictor(context, masks.context, masks.targets, masks.target_mask_ids())
    per_seq = torch.split((prediction - target).abs().mean(-1), masks.targets.lengths.tolist())
    config = [torch.cat(per_seq[m::2]).mean() for m in range(2)]
    torch.testing.assert_close(out.loss, (config[0] + config[1]) / 2)
    assert out.num_tokens["context"] == masks.context.total
    # no gradient reaches the target encoder
    out.loss.backward()
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert any(p.grad is not None for p in method.context_encoder.parameters())


def test_patch_and_tubelet_embeddings_equal_their_strided_convolutions():
    from jepalab.models.layers import PatchEmbed

    image = PatchEmbed(16, 4, in_chans=3, embed_dim=8)
    x = torch.randn(2, 3, 16, 16)
    expected = image.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(image(x), expected, rtol=1e-5, atol=1e-5)
    video = TubeletEmbed(16, 4, num_frames=T, tubelet_size=TUB, in_chans=3, embed_dim=8)
    clip = torch.randn(2, 3, T, 16, 16)
    expected = video.proj(clip).flatten(2).transpose(1, 2)
    torch.testing.assert_close(video(clip), expected, rtol=1e-5, atol=1e-5)
    # patchify (also the probe's raw-pixel tokens) follows the token order: token (t=1, r=2,
    # c=3) holds frames 2-3, rows 8-11, columns 12-15
    token = 16 + 2 * 4 + 3
    pixels = clip[0, :, 2:4, 8:12, 12:16].reshape(-1)
    torch.testing.assert_close(video.patchify(clip)[0, token], pixels)
    torch.testing.assert_close(image.patchify(x)[1, 6], x[1, :, 4:8, 8:12].reshape(-1))
