"""ConvNeXt encoders: no leak from masked tokens, timm weight compatibility, the token grid,
the video variant, and their place in the registry and the experiment builder."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from jepalab import create_encoder
from jepalab.config import ConvNeXtEncoderConfig, ViTEncoderConfig
from jepalab.methods.build import build_experiment
from jepalab.models import ConvNeXt, list_encoders
from jepalab.models.build import build_encoder
from jepalab.models.convnext import (
    CONVNEXT_SIZES,
    convert_timm_state_dict,
    inflate_image_state_dict,
    stage_strides,
)
from jepalab.ragged import Ragged

from .conftest import compose_config

CONVNEXTS = list_encoders("convnext*")


def _randomise_scales(model: torch.nn.Module) -> None:
    """Layer scales start at 1e-6 and GRN at 0: make every branch matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or ".grn." in name:
                p.normal_(0.0, 1.0)


def _random_keep(num_seqs: int, num_tokens: int, generator: torch.Generator) -> Ragged:
    seqs = []
    for _ in range(num_seqs):
        n = int(torch.randint(1, num_tokens, (), generator=generator))
        seqs.append(torch.randperm(num_tokens, generator=generator)[:n].sort().values)
    return Ragged.from_sequences(seqs)


def _pixel_mask(encoder: ConvNeXt, keep: Ragged) -> torch.Tensor:
    """0/1 ``(S, 1, [T,] H, W)`` of the visible pixels, built independently of the encoder's
    own mask upsampling (nearest-neighbour interpolation of the token mask)."""
    tokens = keep.to_mask(encoder.num_patches).float()
    grid = tokens.view(keep.num_seqs, 1, *encoder.grid_size)
    if encoder.video:
        scale = (encoder.tubelet_size, encoder.patch_size, encoder.patch_size)
        return F.interpolate(grid, scale_factor=scale, mode="nearest")
    return F.interpolate(grid, scale_factor=encoder.patch_size, mode="nearest")


def test_registry_has_every_size_in_both_versions():
    assert sorted(f"convnext{v}_{s}" for s in CONVNEXT_SIZES for v in ("", "v2")) == CONVNEXTS
    assert len(CONVNEXTS) == 14


@pytest.mark.parametrize("name", CONVNEXTS)
def test_masked_tokens_do_not_leak_into_visible_outputs(name):
    """Changing the pixels of masked tokens changes no visible output, exactly (fp32)."""
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=32, patch_size=8).eval()
    _randomise_scales(encoder)
    gen = torch.Generator().manual_seed(1)
    keep = _random_keep(4, encoder.num_patches, gen)  # 2 images, 2 contexts each
    images = torch.randn(2, 3, 32, 32, generator=gen)
    mask = _pixel_mask(encoder, keep)
    per_context = images.repeat_interleave(2, dim=0)
    noise = 10 * torch.randn(per_context.shape, generator=gen)
    tampered = per_context * mask + noise * (1 - mask)
    with torch.no_grad():
        out = encoder(images, keep)
        out_tampered = encoder(tampered, keep)  # one context per (tampered) image
        dense, dense_tampered = encoder(per_context), encoder(tampered)
        visible_changed = encoder(per_context * (1 - mask) + noise * mask, keep)
    assert out.shape == (keep.total, encoder.embed_dim)
    assert torch.equal(out, out_tampered)
    assert not torch.allclose(dense, dense_tampered)  # the dense encoder does see them
    assert not torch.allclose(out, visible_changed)  # and the masked one sees visible pixels


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_pico"])
def test_video_variant_does_not_leak_and_changes_with_visible_pixels(name):
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=32, patch_size=8, num_frames=4, tubelet_size=2)
    encoder.eval()
    _randomise_scales(encoder)
    assert encoder.grid_size == (2, 4, 4)
    gen = torch.Generator().manual_seed(2)
    keep = _random_keep(2, encoder.num_patches, gen)
    clips = torch.randn(2, 3, 4, 32, 32, generator=gen)
    mask = _pixel_mask(encoder, keep)
    noise = torch.randn(clips.shape, generator=gen)
    with torch.no_grad():
        out = encoder(clips, keep)
        assert torch.equal(out, encoder(clips * mask + noise * (1 - mask), keep))
        assert not torch.allclose(out, encoder(clips * (1 - mask) + noise * mask, keep))


@pytest.mark.parametrize(
    ("name", "frames"), [("convnext_atto", 1), ("convnextv2_atto", 1), ("convnextv2_atto", 4)]
)
def test_operators_that_mix_positions_read_zeros_at_masked_positions(name, frames):
    """Input zeroing alone already keeps masked *pixels* out; the encoder must also act as if
    masked positions did not exist (SparK): every depthwise convolution and every GRN reads
    exactly zero there, at every stage's resolution."""
    torch.manual_seed(0)
    video = dict(num_frames=frames, tubelet_size=2) if frames > 1 else {}
    encoder = create_encoder(name, img_size=32, patch_size=8, **video).eval()
    _randomise_scales(encoder)
    keep = _random_keep(2, encoder.num_patches, torch.Generator().manual_seed(3))
    token_mask = keep.to_mask(encoder.num_patches).float()
    token_mask = token_mask.view(keep.num_seqs, 1, *encoder.grid_size)
    checked = []

    def masked_part(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        x = x.movedim(-1, 1) if channels_last else x
        mask = F.interpolate(token_mask, size=x.shape[2:], mode="nearest")
        return x * (1 - mask)

    def check(module, args, channels_last):
        checked.append(module)
        assert masked_part(args[0], channels_last).abs().max() == 0, type(module).__name__

    for blk in encoder.blocks:
        blk.conv_dw.register_forward_pre_hook(lambda m, a: check(m, a, False))
        if blk.mlp.grn is not None:
            blk.mlp.grn.register_forward_pre_hook(lambda m, a: check(m, a, True))
    shape = (2, 3, *([frames] if frames > 1 else []), 32, 32)
    with torch.no_grad():
        encoder(torch.randn(shape), keep)
    grns = sum(blk.mlp.grn is not None for blk in encoder.blocks)
    assert len(checked) == len(encoder.blocks) + grns


def test_all_visible_masked_forward_equals_the_dense_forward():
    torch.manual_seed(0)
    encoder = create_encoder("convnextv2_atto", img_size=64, patch_size=16).eval()
    _randomise_scales(encoder)
    images = torch.randn(3, 3, 64, 64)
    every = Ragged.from_sequences([torch.arange(encoder.num_patches)] * 3)
    with torch.no_grad():
        dense = encoder(images)
        packed = encoder(images, every)
    torch.testing.assert_close(packed, dense.reshape(-1, encoder.embed_dim), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if ("small" in n or "base" in n) else n
        for n in CONVNEXTS
    ],
)
def test_timm_weights_load_and_give_timm_outputs(name):
    """timm's ConvNeXt (built locally, random weights) loads strictly into ours; the token
    features equal timm's feature map, and our final per-token norm is timm's head norm."""
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    _randomise_scales(reference)
    ours = create_encoder(name, img_size=64).eval()
    ours.load_state_dict(convert_timm_state_dict(reference.state_dict()))  # strict
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feature_map = reference.forward_features(images)
        expected = F.layer_norm(
            feature_map.flatten(2).transpose(1, 2),
            (feature_map.shape[1],),
            reference.head.norm.weight,
            reference.head.norm.bias,
            eps=1e-6,
        )
        torch.testing.assert_close(ours.feature_map(images), feature_map, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(images), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("patch_size", "stem", "strides"),
    [
        (32, 4, [1, 2, 2, 2]),
        (16, 4, [1, 2, 2, 1]),
        (8, 4, [1, 2, 1, 1]),
        (4, 4, [1, 1, 1, 1]),
        (2, 2, [1, 1, 1, 1]),
    ],
)
def test_token_stride_sets_the_stem_and_downsamplings(patch_size, stem, strides):
    assert stage_strides(patch_size, 4) == (stem, strides)
    encoder = create_encoder("convnext_atto", img_size=64, patch_size=patch_size)
    assert encoder.grid_size == (64 // patch_size, 64 // patch_size)
    out = encoder(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, (64 // patch_size) ** 2, 320)


@pytest.mark.parametrize("patch_size", [0, 3, 14, 64])
def test_impossible_token_strides_are_refused_with_the_valid_ones(patch_size):
    with pytest.raises(ValueError, match=r"token strides \[1, 2, 4, 8, 16, 32\]"):
        create_encoder("convnext_atto", img_size=224, patch_size=patch_size)


def test_inputs_of_the_wrong_size_are_refused():
    encoder = create_encoder("convnext_atto", img_size=64)
    with pytest.raises(ValueError, match="encoder.img_size"):
        encoder(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        create_encoder("convnext_atto", img_size=48, patch_size=32)


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_inflated_image_weights_give_image_features_on_a_static_clip(name):
    """I3D inflation: a clip of one repeated frame gives the image encoder's features at every
    time step (the stem averages the tubelet, depthwise kernels sit at the centre step).
    Exactly so for V1; V2's GRN norm spans the clip, which rescales but keeps directions."""
    torch.manual_seed(0)
    image_encoder = create_encoder(name, img_size=32, patch_size=8).eval()
    _randomise_scales(image_encoder)
    video_encoder = create_encoder(
        name, img_size=32, patch_size=8, num_frames=4, tubelet_size=2
    ).eval()
    video_encoder.load_state_dict(inflate_image_state_dict(image_encoder.state_dict()))
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image_tokens = image_encoder(frame)  # (2, 16, D)
        clip = frame[:, :, None].expand(-1, -1, 4, -1, -1)
        video_tokens = video_encoder(clip).view(2, 2, 16, -1)  # (B, T', HW, D)
    for step in range(2):
        if name.startswith("convnextv2"):
            cosine = F.cosine_similarity(video_tokens[:, step], image_tokens, dim=-1)
            assert cosine.min() > 0.99
        else:
            torch.testing.assert_close(video_tokens[:, step], image_tokens, rtol=1e-4, atol=1e-4)


def test_gradients_reach_only_through_visible_tokens():
    torch.manual_seed(0)
    encoder = create_encoder("convnextv2_atto", img_size=32, patch_size=8)
    keep = Ragged.from_sequences([torch.tensor([0, 5, 10, 15])])
    images = torch.randn(1, 3, 32, 32, requires_grad=True)
    encoder(images, keep).sum().backward()
    mask = _pixel_mask(encoder, keep)
    assert images.grad[mask.expand_as(images) == 0].abs().max() == 0
    assert images.grad[mask.expand_as(images) == 1].abs().max() > 0


def test_experiments_switch_to_convnext_by_the_encoder_group_alone():
    """``encoder=convnext_*`` in the ViT experiments: the experiments set only the grid keys
    every encoder has, so the ConvNeXt section has no ViT key, the token grid is kept, and an
    unset predictor.num_heads gives heads of width 32."""
    for experiment, grid in (("ijepa_digits", (8, 8)), ("vjepa_moving_digits", (4, 8, 8))):
        cfg = compose_config(["encoder=convnextv2_atto"], experiment=experiment)
        assert OmegaConf.get_type(cfg.encoder) is ConvNeXtEncoderConfig
        assert "embed_dim" not in cfg.encoder
        exp = build_experiment(cfg)
        encoder = exp.method.context_encoder
        assert isinstance(encoder, ConvNeXt) and encoder.grid_size == grid
        heads = cfg.predictor.num_heads or cfg.predictor.embed_dim // 32  # vjepa sets 4
        assert exp.method.predictor.predictor_blocks[0].attn.num_heads == heads


def test_each_encoder_family_has_only_its_own_keys():
    """A ConvNeXt key given to a ViT (and the other way round) is an error naming the key;
    a section of the wrong family is refused by the builder too."""
    with pytest.raises(ConfigCompositionException, match="override 'encoder.dims'"):
        compose_config(["encoder.dims=[8,16,32,64]"])
    with pytest.raises(ConfigCompositionException, match="override 'encoder.embed_dim'"):
        compose_config(["encoder=convnext_atto", "encoder.embed_dim=64"])
    with pytest.raises(ValueError, match="needs a ConvNeXtEncoderConfig section"):
        build_encoder(ViTEncoderConfig(name="convnext_atto", img_size=32))
    encoder = build_encoder(ConvNeXtEncoderConfig(name="convnext_atto", img_size=32))
    assert isinstance(encoder, ConvNeXt)


def test_convnext_shape_overrides_apply():
    cfg = compose_config(
        ["encoder=convnext_atto", "encoder.dims=[8,16,24,32]", "encoder.depths=[1,1,2,1]"],
        experiment="ijepa_digits_convnext",
    )
    encoder = build_encoder(cfg.encoder)
    assert encoder.dims == (8, 16, 24, 32) and len(encoder.blocks) == 5
    assert encoder.embed_dim == 32


def _convolutions_and_inputs(encoder: ConvNeXt, x: torch.Tensor, keep: Ragged):
    """Every convolution of ``encoder`` with the input (values and memory layout) it sees in
    a masked forward."""
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m, args[0])))
        for name, m in encoder.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
    ]
    with torch.no_grad():
        encoder(x, keep)
    for hook in hooks:
        hook.remove()
    return seen


def _forward_backward(conv, x: torch.Tensor, grad: torch.Tensor, threads: int | None):
    """``(y, dweight, dbias, dx)`` of ``conv(x)`` (``threads``) or of ``F.convNd`` (None)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        conv.zero_grad()
        x = x.clone().requires_grad_()  # keeps the memory layout
        if threads is None:
            conv_nd = F.conv2d if x.ndim == 4 else F.conv3d
            y = conv_nd(x, conv.weight, conv.bias, conv.stride, conv.padding, groups=conv.groups)
        else:
            y = conv(x)
        y.backward(grad)
        return y.detach(), conv.weight.grad.clone(), conv.bias.grad.clone(), x.grad
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("convnext_atto", dict(img_size=64)),  # timm's layout: 4x4 stem, 2x2 downsamplings
        ("convnextv2_atto", dict(img_size=64, patch_size=8)),  # 1x1 width changes
        ("convnext_atto", dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2)),
    ],
)
def test_convolutions_give_the_same_bits_for_any_thread_count(name, kwargs):
    """Every convolution on the training path (stem, downsamplings, depthwise) gives
    bit-identical outputs and weight, bias and input gradients with 1 and 2 threads, so a
    resumed run cannot drift with the machine's load or core count; and equals the
    convolution ``F.conv2d`` / ``F.conv3d`` computes, to float rounding. (oneDNN's
    convolution weight gradient differs by ~1e-6 relative between 1 and 2 threads for the
    Atto stem here: the stem and downsamplings are matrix products for that reason.)"""
    torch.manual_seed(0)
    encoder = create_encoder(name, **kwargs)
    _randomise_scales(encoder)
    gen = torch.Generator().manual_seed(4)
    frames = (kwargs["num_frames"],) if "num_frames" in kwargs else ()
    images = torch.randn(8, 3, *frames, kwargs["img_size"], kwargs["img_size"], generator=gen)
    keep = _random_keep(16, encoder.num_patches, gen)  # two contexts per image
    convolutions = _convolutions_and_inputs(encoder, images, keep)
    assert len(convolutions) == 1 + sum(  # the stem, the downsamplings, one per block
        not isinstance(s.downsample, torch.nn.Identity) for s in encoder.stages
    ) + len(encoder.blocks)
    for conv_name, conv, x in convolutions:
        grad = torch.randn(conv(x).shape, generator=gen)
        one, two = (_forward_backward(conv, x, grad, t) for t in (1, 2))
        for what, a, b in zip(("output", "dweight", "dbias", "dinput"), one, two, strict=True):
            assert torch.equal(a, b), f"{conv_name} {what}: 1 vs 2 threads {(a - b).abs().max()}"
        reference = _forward_backward(conv, x, grad, None)
        for a, b in zip(two, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
