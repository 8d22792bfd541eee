"""Official checkpoints (I-JEPA, V-JEPA, V-JEPA 2, V-JEPA 2-AC) load into jepalab and export back.

Each test builds a tiny checkpoint in the *official* layout -- the key names, wrapper prefixes,
tensor shapes and position tables of facebookresearch/ijepa, jepa and vjepa2 -- with random
weights, loads it through :mod:`jepalab.interop`, and compares our forward pass with a
re-implementation of the *reference* forward pass written here from the official model
definitions (fused ``qkv`` as ``(3, heads, head_dim)``, explicit softmax attention, the
reference's sincos tables, V-JEPA 2's ``.repeat`` RoPE, the AC predictor's action tokens).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jepalab import create_encoder, create_predictor
from jepalab.cli import main as cli_main
from jepalab.interop import (
    CheckpointMismatchError,
    detect_format,
    load_encoder,
    load_predictor,
    tensors_equal,
    to_jepalab,
    to_official,
)
from jepalab.ragged import Ragged

F64 = torch.float64
EPS = 1e-6
TOL = 1e-5  # max abs error allowed between ours and the reference (fp32)


# -- official position tables (numpy code of the official pos_embs.py, redone in torch) ------
def ref_sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=F64) / (dim / 2.0))
    out = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def ref_sincos_2d(dim: int, g: int) -> torch.Tensor:
    # np.meshgrid(grid_w, grid_h): the *first* half of the channels encodes the column.
    first, second = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="xy")
    return torch.cat([ref_sincos_1d(dim // 2, first), ref_sincos_1d(dim // 2, second)], 1)


def ref_sincos_3d_uniform(dim: int, g: int, depth: int) -> torch.Tensor:
    """``get_3d_sincos_pos_embed(uniform_power=True)``: 2*ceil(D/6) channels per axis, cut."""
    h, d, w = torch.meshgrid(torch.arange(g), torch.arange(depth), torch.arange(g), indexing="xy")
    sub = int(math.ceil(dim / 6) * 2)
    emb = torch.cat([ref_sincos_1d(sub, d), ref_sincos_1d(sub, h), ref_sincos_1d(sub, w)], 1)
    return emb[:, :dim]


# -- the reference transformer pieces ---------------------------------------------------------
def ref_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """vjepa2 ``rotate_queries_or_keys``: fp32 angles, expanded with ``.repeat`` (its quirk)."""
    d = x.shape[-1]
    omega = torch.arange(d // 2, dtype=x.dtype) / (d / 2.0)
    omega = 1.0 / 10000**omega
    freq = pos.to(x.dtype)[..., None] * omega
    sin, cos = freq.sin(), freq.cos()
    sin, cos = torch.cat([sin, sin], -1), torch.cat([cos, cos], -1)  # == .repeat(..., 2)
    y = x.unflatten(-1, (-1, 2))
    y = torch.stack((-y[..., 1], y[..., 0]), dim=-1).flatten(-2)
    return x * cos + y * sin


def ref_rope_qk(q: torch.Tensor, t, h, w) -> torch.Tensor:
    """vjepa2 ``RoPEAttention``: chunks of ``2*((hd//3)//2)`` for time, row, column."""
    c = 2 * ((q.shape[-1] // 3) // 2)
    parts = [ref_rotate(q[..., i * c : (i + 1) * c], p) for i, p in enumerate((t, h, w))]
    return torch.cat([*parts, q[..., 3 * c :]], dim=-1)


def ref_block(x, p, pre, heads, qk_fn=None, allowed=None):
    b, n, dim = x.shape
    hd = dim // heads
    y = F.layer_norm(x, (dim,), p[pre + "norm1.weight"], p[pre + "norm1.bias"], EPS)
    qkv = F.linear(y, p[pre + "attn.qkv.weight"], p[pre + "attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    if qk_fn is not None:
        q, k = qk_fn(q), qk_fn(k)
    scores = (q @ k.transpose(-2, -1)) * hd**-0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, dim)
    x = x + F.linear(y, p[pre + "attn.proj.weight"], p[pre + "attn.proj.bias"])
    y = F.layer_norm(x, (dim,), p[pre + "norm2.weight"], p[pre + "norm2.bias"], EPS)
    y = F.gelu(F.linear(y, p[pre + "mlp.fc1.weight"], p[pre + "mlp.fc1.bias"]))
    return x + F.linear(y, p[pre + "mlp.fc2.weight"], p[pre + "mlp.fc2.bias"])


def ref_encoder(p, x, heads, depth, masks=None, rope_grid=None):
    """Reference ViT encoder; ``masks`` ``(B, K)`` kept indices (``apply_masks``)."""
    w = p["patch_embed.proj.weight"]
    conv = F.conv2d if w.ndim == 4 else F.conv3d
    stride = w.shape[2:]
    tokens = conv(x, w, p["patch_embed.proj.bias"], stride=stride).flatten(2).transpose(1, 2)
    if "pos_embed" in p and rope_grid is None:
        tokens = tokens + p["pos_embed"]
    ids = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)
    if masks is not None:
        tokens = torch.gather(tokens, 1, masks[..., None].expand(-1, -1, tokens.shape[-1]))
        ids = masks
    qk_fn = None
    if rope_grid is not None:
        _, gh, gw = rope_grid
        pos = (ids // (gh * gw), (ids % (gh * gw)) // gw, ids % gw)
        qk_fn = lambda q: ref_rope_qk(q, *(t[:, None] for t in pos))  # noqa: E731
    for i in range(depth):
        tokens = ref_block(tokens, p, f"blocks.{i}.", heads, qk_fn)
    return F.layer_norm(tokens, (tokens.shape[-1],), p["norm.weight"], p["norm.bias"], EPS)


def ref_masked_predictor(p, ctx, masks_x, masks_y, heads, depth, token, rope_grid=None):
    """I-JEPA / V-JEPA / V-JEPA 2 ``VisionTransformerPredictor.forward`` for one mask set:
    ``ctx`` (B, Nc, E), ``masks_x`` (B, Nc), ``masks_y`` (B, Nt); returns (B, Nt, E)."""
    x = F.linear(ctx, p["predictor_embed.weight"], p["predictor_embed.bias"])
    b, n_ctx, dim = x.shape
    pred = token.reshape(1, 1, dim).expand(b, masks_y.shape[1], dim)
    if rope_grid is None:
        table = p["predictor_pos_embed"][0]
        x, pred = x + table[masks_x], pred + table[masks_y]
    x = torch.cat([x, pred], dim=1)
    ids = torch.cat([masks_x, masks_y], dim=1)
    qk_fn, order = None, None
    if rope_grid is not None:  # vjepa2 sorts the tokens by position first
        order = ids.argsort(dim=1)
        ids = torch.gather(ids, 1, order)
        x = torch.gather(x, 1, order[..., None].expand(-1, -1, dim))
        _, gh, gw = rope_grid
        pos = (ids // (gh * gw), (ids % (gh * gw)) // gw, ids % gw)
        qk_fn = lambda q: ref_rope_qk(q, *(t[:, None] for t in pos))  # noqa: E731
    for i in range(depth):
        x = ref_block(x, p, f"predictor_blocks.{i}.", heads, qk_fn)
    x = F.layer_norm(x, (dim,), p["predictor_norm.weight"], p["predictor_norm.bias"], EPS)
    if order is not None:
        x = torch.gather(x, 1, order.argsort(dim=1)[..., None].expand(-1, -1, dim))
    return F.linear(x[:, n_ctx:], p["predictor_proj.weight"], p["predictor_proj.bias"])


def ref_ac_predictor(p, z, actions, states, heads, depth, grid):
    """vjepa2 ``VisionTransformerPredictorAC.forward`` (no extrinsics): ``z`` (B, T*H*W, E)."""
    gh, gw = grid
    x = F.linear(z, p["predictor_embed.weight"], p["predictor_embed.bias"])
    b, n, dim = x.shape
    t_steps, hw, cond = n // (gh * gw), gh * gw, 2
    a = F.linear(actions, p["action_encoder.weight"], p["action_encoder.bias"])[:, :, None]
    s = F.linear(states, p["state_encoder.weight"], p["state_encoder.bias"])[:, :, None]
    x = torch.cat([a, s, x.view(b, t_steps, hw, dim)], dim=2).flatten(1, 2)
    per = cond + hw
    step = torch.arange(t_steps * per) // per
    allowed = step[None, :] <= step[:, None]  # build_action_block_causal_attention_mask
    ids = torch.arange(t_steps * hw)
    pos = (ids // hw, (ids % hw) // gw, ids % gw)
    c = 2 * (((dim // heads) // 3) // 2)

    def qk_fn(q):  # ACRoPEAttention: conditioning tokens rotate in the time chunk only
        q = q.view(b, heads, t_steps, per, -1)
        qa, qx = q[:, :, :, :cond], q[:, :, :, cond:].flatten(2, 3)
        qx = ref_rope_qk(qx, *pos).view(b, heads, t_steps, hw, -1)
        times = torch.arange(t_steps)[:, None].expand(-1, cond)
        qa = torch.cat([ref_rotate(qa[..., :c], times), qa[..., c:]], dim=-1)
        return torch.cat([qa, qx], dim=3).flatten(2, 3)

    for i in range(depth):
        x = ref_block(x, p, f"predictor_blocks.{i}.", heads, qk_fn, allowed)
    x = x.view(b, t_steps, per, dim)[:, :, cond:].flatten(1, 2)
    x = F.layer_norm(x, (dim,), p["predictor_norm.weight"], p["predictor_norm.bias"], EPS)
    return F.linear(x, p["predictor_proj.weight"], p["predictor_proj.bias"])


# -- official-layout random checkpoints -------------------------------------------------------
def _blocks(g, prefix: str, depth: int, dim: int, mlp: int = 4) -> dict[str, torch.Tensor]:
    sd = {}
    for i in range(depth):
        pre = f"{prefix}.{i}."
        for norm in ("norm1", "norm2"):
            sd[pre + f"{norm}.weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
            sd[pre + f"{norm}.bias"] = 0.1 * torch.randn(dim, generator=g)
        for name, (o, i_) in {
            "attn.qkv": (3 * dim, dim),
            "attn.proj": (dim, dim),
            "mlp.fc1": (mlp * dim, dim),
            "mlp.fc2": (dim, mlp * dim),
        }.items():
            sd[pre + name + ".weight"] = torch.randn(o, i_, generator=g) / math.sqrt(i_)
            sd[pre + name + ".bias"] = 0.1 * torch.randn(o, generator=g)
    return sd


def _linear(g, name: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    return {
        f"{name}.weight": torch.randn(out, inp, generator=g) / math.sqrt(inp),
        f"{name}.bias": 0.1 * torch.randn(out, generator=g),
    }


def _norm(g, name: str, dim: int) -> dict[str, torch.Tensor]:
    return {
        f"{name}.weight": 1 + 0.1 * torch.randn(dim, generator=g),
        f"{name}.bias": 0.1 * torch.randn(dim, generator=g),
    }


def official_encoder(g, dim, depth, patch, chans=3, tubelet=None, pos=None):
    shape = (dim, chans, patch, patch) if tubelet is None else (dim, chans, tubelet, patch, patch)
    sd = {
        "patch_embed.proj.weight": torch.randn(*shape, generator=g)
        / math.sqrt(math.prod(shape[1:])),
        "patch_embed.proj.bias": 0.1 * torch.randn(dim, generator=g),
    }
    if pos is not None:
        sd["pos_embed"] = pos.float()[None]
    sd.update(_blocks(g, "blocks", depth, dim))
    sd.update(_norm(g, "norm", dim))
    return sd


def official_predictor(g, enc_dim, dim, depth, pos=None, mask_tokens=None):
    sd = _linear(g, "predictor_embed", dim, enc_dim)
    if mask_tokens == "single":  # I-JEPA
        sd["mask_token"] = 0.5 * torch.randn(1, 1, dim, generator=g)
    else:
        for i in range(mask_tokens):
            sd[f"mask_tokens.{i}"] = 0.5 * torch.randn(1, 1, dim, generator=g)
    if pos is not None:
        sd["predictor_pos_embed"] = pos.float()[None]
    sd.update(_blocks(g, "predictor_blocks", depth, dim))
    sd.update(_norm(g, "predictor_norm", dim))
    sd.update(_linear(g, "predictor_proj", enc_dim, dim))
    return sd


def wrap(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def official_file(encoder: dict, predictor: dict, prefix: str, pred_prefix: str | None = None):
    target = {k: v + 0.01 for k, v in encoder.items()}  # the EMA encoder differs
    return {
        "encoder": wrap(encoder, prefix),
        "target_encoder": wrap(target, prefix),
        "predictor": wrap(predictor, pred_prefix or prefix),
        "opt": {"state": {}, "param_groups": []},
        "epoch": 300,
        "loss": 0.25,
        "batch_size": 128,
    }


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- I-JEPA -----------------------------------------------------------------------------------
IJ = dict(dim=32, depth=2, heads=4, patch=4, img=16, pdim=24, pdepth=2)


def ijepa_checkpoint(seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = IJ["img"] // IJ["patch"]
    enc = official_encoder(
        g, IJ["dim"], IJ["depth"], IJ["patch"], pos=ref_sincos_2d(IJ["dim"], grid)
    )
    pred = official_predictor(
        g, IJ["dim"], IJ["pdim"], IJ["pdepth"], ref_sincos_2d(IJ["pdim"], grid), "single"
    )
    return official_file(enc, pred, "module.")


def ijepa_models():
    kw = dict(img_size=IJ["img"], patch_size=IJ["patch"], embed_dim=IJ["dim"], depth=IJ["depth"])
    enc = create_encoder("vit_tiny_patch16", num_heads=IJ["heads"], **kw)
    pred = create_predictor(
        "masked_vit_predictor",
        grid_size=enc.grid_size,
        encoder_dim=IJ["dim"],
        embed_dim=IJ["pdim"],
        depth=IJ["pdepth"],
        num_heads=IJ["heads"],
    )
    return enc, pred


def test_ijepa_encoder_and_predictor_match_the_reference():
    ckpt = ijepa_checkpoint()
    enc, pred = ijepa_models()
    assert load_encoder(enc, ckpt) == "ijepa"
    assert load_predictor(pred, ckpt) == "ijepa"
    tgt = {k.removeprefix("module."): v for k, v in ckpt["target_encoder"].items()}
    ctx_p = {k.removeprefix("module."): v for k, v in ckpt["predictor"].items()}

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, IJ["img"], IJ["img"], generator=g)
    ref = ref_encoder(tgt, x, IJ["heads"], IJ["depth"])
    assert _max_err(enc.eval()(x), ref) < TOL

    # Context: 10 patches per sample; targets: 2 blocks of 3 patches per sample.
    masks_x = torch.stack([torch.randperm(16, generator=g)[:10].sort().values for _ in range(2)])
    masks_y = [torch.stack([torch.randperm(16, generator=g)[:3] for _ in range(2)]) for _ in "ab"]
    z = ref_encoder(tgt, x, IJ["heads"], IJ["depth"], masks_x)
    ours_z = enc(x, Ragged.from_dense(masks_x))
    assert _max_err(ours_z, z.reshape(-1, IJ["dim"])) < TOL
    token = ctx_p["mask_token"]
    refs = [
        ref_masked_predictor(ctx_p, z, masks_x, m, IJ["heads"], IJ["pdepth"], token)
        for m in masks_y
    ]
    # ours: sample-major (sample b, block j), the reference's list is block-major
    targets = Ragged.from_sequences([masks_y[j][b] for b in range(2) for j in range(2)])
    ours = pred(ours_z, Ragged.from_dense(masks_x), targets).view(2, 2, 3, IJ["dim"])
    assert _max_err(ours, torch.stack(refs, dim=1)) < TOL


# -- V-JEPA -----------------------------------------------------------------------------------
VJ = dict(dim=40, depth=2, heads=4, patch=4, img=16, frames=4, tubelet=2, pdim=32, pdepth=2)


def vjepa_checkpoint(seed=0):
    g = torch.Generator().manual_seed(seed)
    side, depth_t = VJ["img"] // VJ["patch"], VJ["frames"] // VJ["tubelet"]
    enc = official_encoder(
        g,
        VJ["dim"],
        VJ["depth"],
        VJ["patch"],
        tubelet=VJ["tubelet"],
        pos=ref_sincos_3d_uniform(VJ["dim"], side, depth_t),
    )
    pred = official_predictor(
        g, VJ["dim"], VJ["pdim"], VJ["pdepth"], ref_sincos_3d_uniform(VJ["pdim"], side, depth_t), 2
    )
    return official_file(enc, pred, "module.backbone.")


def test_vjepa_uniform_power_tables_and_mask_tokens_match_the_reference():
    ckpt = vjepa_checkpoint()
    video = dict(img_size=VJ["img"], patch_size=VJ["patch"], num_frames=VJ["frames"])
    enc = create_encoder(
        "vit_tiny_patch16", embed_dim=VJ["dim"], depth=VJ["depth"], num_heads=VJ["heads"], **video
    )
    pred = create_predictor(
        "masked_vit_predictor",
        grid_size=enc.grid_size,
        encoder_dim=VJ["dim"],
        embed_dim=VJ["pdim"],
        depth=VJ["pdepth"],
        num_heads=VJ["heads"],
        num_mask_tokens=2,
    )
    assert load_encoder(enc, ckpt, key="encoder") == "vjepa"
    assert load_predictor(pred, ckpt) == "vjepa"
    p_enc = {k.removeprefix("module.backbone."): v for k, v in ckpt["encoder"].items()}
    p_pred = {k.removeprefix("module.backbone."): v for k, v in ckpt["predictor"].items()}

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, VJ["frames"], VJ["img"], VJ["img"], generator=g)
    assert _max_err(enc.eval()(x), ref_encoder(p_enc, x, VJ["heads"], VJ["depth"])) < TOL
    # Two mask configurations, each with its own context and its own mask token.
    n = 32
    for i in range(2):
        perm = torch.stack([torch.randperm(n, generator=g) for _ in range(2)])
        masks_x, masks_y = perm[:, : 12 + 4 * i], perm[:, 20:]
        z = ref_encoder(p_enc, x, VJ["heads"], VJ["depth"], masks_x)
        ref = ref_masked_predictor(
            p_pred, z, masks_x, masks_y, VJ["heads"], VJ["pdepth"], p_pred[f"mask_tokens.{i}"]
        )
        ours_z = enc(x, Ragged.from_dense(masks_x))
        ours = pred(
            ours_z,
            Ragged.from_dense(masks_x),
            Ragged.from_dense(masks_y),
            mask_ids=torch.full((2,), i),
        )
        assert _max_err(ours.view_as(ref), ref) < TOL


# -- V-JEPA 2 ---------------------------------------------------------------------------------
V2 = dict(
    dim=40, depth=2, heads=2, patch=4, img=16, frames=4, tubelet=2, pdim=24, pdepth=2, pheads=2
)


def vjepa2_checkpoint(seed=0, with_unused_tables=True):
    g = torch.Generator().manual_seed(seed)
    side, depth_t = V2["img"] // V2["patch"], V2["frames"] // V2["tubelet"]
    # The released files keep sincos tables the RoPE models never use (hub: strict=False).
    pos = ref_sincos_3d_uniform(V2["dim"], side, depth_t) if with_unused_tables else None
    ppos = ref_sincos_3d_uniform(V2["pdim"], side, depth_t) if with_unused_tables else None
    enc = official_encoder(g, V2["dim"], V2["depth"], V2["patch"], tubelet=V2["tubelet"], pos=pos)
    pred = official_predictor(g, V2["dim"], V2["pdim"], V2["pdepth"], ppos, 3)
    return official_file(enc, pred, "module.backbone.")


def test_vjepa2_rope_encoder_and_predictor_match_the_reference(tmp_path):
    ckpt = vjepa2_checkpoint()
    path = tmp_path / "vjepa2.pt"
    torch.save(ckpt, path)
    video = dict(img_size=V2["img"], patch_size=V2["patch"], num_frames=V2["frames"])
    # No pos_embed given: the file implies RoPE with the reference channel layout.
    enc = create_encoder(
        "vit_tiny_patch16",
        embed_dim=V2["dim"],
        depth=V2["depth"],
        num_heads=V2["heads"],
        checkpoint=path,
        checkpoint_format="vjepa2",
        **video,
    )
    assert enc.rope is not None and enc.rope.reference_layout
    grid = enc.grid_size
    pred = create_predictor(
        "masked_vit_predictor",
        grid_size=grid,
        encoder_dim=V2["dim"],
        embed_dim=V2["pdim"],
        depth=V2["pdepth"],
        num_heads=V2["pheads"],
        num_mask_tokens=3,
        checkpoint=path,
        checkpoint_format="vjepa2",
    )
    p_enc = {k.removeprefix("module.backbone."): v for k, v in ckpt["target_encoder"].items()}
    p_pred = {k.removeprefix("module.backbone."): v for k, v in ckpt["predictor"].items()}

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, V2["frames"], V2["img"], V2["img"], generator=g)
    ref = ref_encoder(p_enc, x, V2["heads"], V2["depth"], rope_grid=grid)
    assert _max_err(enc.eval()(x), ref) < TOL
    perm = torch.stack([torch.randperm(32, generator=g) for _ in range(2)])
    masks_x, masks_y = perm[:, :14], perm[:, 14:24]
    z = ref_encoder(p_enc, x, V2["heads"], V2["depth"], masks_x, rope_grid=grid)
    assert _max_err(enc(x, Ragged.from_dense(masks_x)), z.reshape(-1, V2["dim"])) < TOL
    ref = ref_masked_predictor(
        p_pred, z, masks_x, masks_y, V2["pheads"], V2["pdepth"], p_pred["mask_tokens.2"], grid
    )
    ours = pred(
        z.reshape(-1, V2["dim"]),
        Ragged.from_dense(masks_x),
        Ragged.from_dense(masks_y),
        mask_ids=torch.full((2,), 2),
    )
    assert _max_err(ours.view_as(ref), ref) < TOL


# -- V-JEPA 2-AC ------------------------------------------------------------------------------
AC = dict(enc_dim=40, dim=24, depth=2, heads=2, grid=(3, 3), action=7)


def ac_checkpoint(seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = official_encoder(g, V2["dim"], V2["depth"], V2["patch"], tubelet=V2["tubelet"])
    pred = _linear(g, "predictor_embed", AC["dim"], AC["enc_dim"])
    pred |= _linear(g, "action_encoder", AC["dim"], AC["action"])
    pred |= _linear(g, "state_encoder", AC["dim"], AC["action"])
    pred |= _linear(g, "extrinsics_encoder", AC["dim"], AC["action"] - 1)  # always built
    pred |= _blocks(g, "predictor_blocks", AC["depth"], AC["dim"])
    pred |= _norm(g, "predictor_norm", AC["dim"]) | _linear(
        g, "predictor_proj", AC["enc_dim"], AC["dim"]
    )
    file = official_file(enc, pred, "module.backbone.", pred_prefix="module.")
    file["target_encoder"] = file["encoder"]  # vjepa_droid saves the frozen encoder twice
    return file


def _ac_predictor(**kw):
    return create_predictor(
        "action_predictor",
        grid_size=AC["grid"],
        encoder_dim=AC["enc_dim"],
        action_dim=AC["action"],
        state_dim=AC["action"],
        embed_dim=AC["dim"],
        depth=AC["depth"],
        num_heads=AC["heads"],
        **kw,
    )


def test_vjepa2_ac_predictor_matches_the_reference_and_its_cached_rollout(tmp_path):
    ckpt = ac_checkpoint()
    path = tmp_path / "ac.pt"
    torch.save(ckpt, path)
    pred = _ac_predictor(checkpoint=path)
    assert pred.pos_embed_kind == "rope" and pred.rope_reference_layout
    p = {k.removeprefix("module."): v for k, v in ckpt["predictor"].items()}

    g = torch.Generator().manual_seed(4)
    b, t, n = 2, 3, 9
    z = torch.randn(b, t, n, AC["enc_dim"], generator=g)
    actions = torch.randn(b, t, AC["action"], generator=g)
    states = torch.randn(b, t, AC["action"], generator=g)
    ref = ref_ac_predictor(
        p, z.flatten(1, 2), actions, states, AC["heads"], AC["depth"], AC["grid"]
    )
    assert _max_err(pred(z, actions, states).flatten(1, 2), ref) < TOL

    # The key/value-cached rollout equals recomputing every step with RoPE positions too.
    rolled = pred.rollout(z[:, 0], actions, states)
    frames = [z[:, 0]]
    for step in range(t):
        nxt = pred(torch.stack(frames, 1), actions[:, : step + 1], states[:, : step + 1])[:, -1]
        frames.append(nxt)
    assert _max_err(rolled, torch.stack(frames[1:], 1)) < TOL


# -- export -> import, file conversion, detection -----------------------------------------
CHECKPOINTS = {
    "ijepa": ijepa_checkpoint,
    "vjepa": vjepa_checkpoint,
    "vjepa2": vjepa2_checkpoint,
    "vjepa2_ac": ac_checkpoint,
}


@pytest.mark.parametrize("fmt", list(CHECKPOINTS))
def test_detection_and_official_export_reimport_is_the_identity(fmt):
    ckpt = CHECKPOINTS[fmt]()
    assert detect_format(ckpt) == fmt
    ours = to_jepalab(ckpt)
    assert ours["source"] == fmt and ours["meta"]["epoch"] == 300 and "opt" not in ours
    back = to_official(ours, fmt)
    for role in ("encoder", "target_encoder", "predictor"):
        assert tensors_equal(back[role], ckpt[role]), role  # keys, prefixes, values
    again = to_jepalab(back, fmt)
    for role in ("encoder", "target_encoder", "predictor"):
        assert tensors_equal(again[role], ours[role]), role


def test_reference_unused_tensors_are_set_aside_not_loaded():
    ours = to_jepalab(vjepa2_checkpoint())
    assert set(ours["unused"]["target_encoder"]) == {"pos_embed"}
    assert set(ours["unused"]["predictor"]) == {"predictor_pos_embed"}
    assert "pos_embed" not in ours["target_encoder"]
    ac = to_jepalab(ac_checkpoint())
    assert set(ac["unused"]["predictor"]) == {
        "extrinsics_encoder.weight",
        "extrinsics_encoder.bias",
    }
    # A jepalab-trained AC predictor exports with the zero extrinsics encoder the reference
    # always builds, so the reference's strict loader accepts it.
    pred = _ac_predictor(pos_embed="rope", rope_reference_layout=True)
    out = to_official({"format": "jepalab", "predictor": pred.state_dict()}, "vjepa2_ac")
    assert not out["predictor"]["module.extrinsics_encoder.weight"].any()


def test_cli_convert_round_trip_and_jepalab_checkpoint_loads(tmp_path):
    src, mid, back = tmp_path / "in.pth", tmp_path / "mid.pt", tmp_path / "back.pth"
    ckpt = ijepa_checkpoint()
    torch.save(ckpt, src)
    assert cli_main(["convert", f"src={src}", f"out={mid}", "out_format=jepalab"]) == 0
    assert cli_main(["convert", f"src={mid}", f"out={back}", "out_format=ijepa"]) == 0
    restored = torch.load(back, weights_only=True)
    for role in ("encoder", "target_encoder", "predictor"):
        assert tensors_equal(restored[role], ckpt[role])
    enc, _ = ijepa_models()
    enc_direct, _ = ijepa_models()
    load_encoder(enc, mid)
    load_encoder(enc_direct, src)
    assert tensors_equal(enc.state_dict(), enc_direct.state_dict())
    assert (
        cli_main(["convert", f"src={src}", f"out={mid}", "src_format=vjepa", "out_format=jepalab"])
        == 2
    )


# -- strict loading -------------------------------------------------------------------------
def test_missing_and_unexpected_keys_are_named():
    enc, _ = ijepa_models()
    ckpt = ijepa_checkpoint()
    del ckpt["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    with pytest.raises(
        CheckpointMismatchError, match=r"missing keys \(1\): blocks\.1\.mlp\.fc2\.bias"
    ):
        load_encoder(enc, ckpt)
    ckpt = ijepa_checkpoint()
    ckpt["target_encoder"]["module.blocks.0.attn.q_norm.weight"] = torch.ones(8)
    with pytest.raises(
        CheckpointMismatchError, match=r"unexpected keys \(1\): blocks\.0\.attn\.q_norm"
    ):
        load_encoder(enc, ckpt)


def test_shape_mismatch_names_a_config_that_fits():
    wide = create_encoder("vit_tiny_patch16", img_size=16, patch_size=4, embed_dim=48, depth=3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_encoder(wide, ijepa_checkpoint())
    msg = str(err.value)
    assert "blocks.0.attn.qkv.weight: (96, 32) in the checkpoint, (144, 48) in the model" in msg
    assert "unexpected keys (12): blocks.2." not in msg  # the model has more blocks: missing
    assert "missing keys (12)" in msg
    assert "embed_dim=32, depth=2" in msg and "img_size=16" in msg and "patch_size=4" in msg
    # and that suggestion indeed builds a model that loads
    fit = create_encoder(
        "vit_base_patch16", embed_dim=32, depth=2, patch_size=4, img_size=16, num_heads=4
    )
    load_encoder(fit, ijepa_checkpoint())

    _, pred = ijepa_models()
    big = create_predictor(
        "masked_vit_predictor", grid_size=(4, 4), encoder_dim=32, embed_dim=16, depth=2, num_heads=4
    )
    with pytest.raises(CheckpointMismatchError, match=r"embed_dim=24, depth=2"):
        load_predictor(big, ijepa_checkpoint())


def test_rope_weights_refuse_an_encoder_with_the_wrong_position_scheme():
    video = dict(img_size=16, patch_size=4, num_frames=4, embed_dim=40, depth=2, num_heads=2)
    fixed = create_encoder("vit_tiny_patch16", pos_embed="rope", **video)  # repeat_interleave
    with pytest.raises(CheckpointMismatchError, match="rope_reference_layout=True"):
        load_encoder(fixed, vjepa2_checkpoint(), source="vjepa2")
    sincos = create_encoder("vit_tiny_patch16", **video)
    with pytest.raises(CheckpointMismatchError, match="pos_embed='rope'"):
        load_encoder(sincos, vjepa2_checkpoint(with_unused_tables=False))


def test_loading_never_unpickles_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"encoder": {}, "hook": math.dist}, path)  # a pickled function
    with pytest.raises(ValueError, match="weights_only=True"):
        create_encoder("vit_tiny_patch16", checkpoint=path)


def test_a_jepalab_training_checkpoint_exports_to_the_official_layout():
    enc, pred = ijepa_models()
    model = {f"context_encoder.{k}": v for k, v in enc.state_dict().items()}
    model |= {f"target_encoder.module.{k}": v + 1 for k, v in enc.state_dict().items()}
    model |= {f"predictor.{k}": v for k, v in pred.state_dict().items()}
    official = to_official({"model": model, "step": 7}, "ijepa")
    assert detect_format(official) == "ijepa"
    assert "module.blocks.0.attn.qkv.weight" in official["target_encoder"]
    assert official["predictor"]["module.mask_token"].shape == (1, 1, IJ["pdim"])
    fresh, fresh_pred = ijepa_models()
    load_encoder(fresh, official)
    load_predictor(fresh_pred, official)
    assert torch.equal(fresh.norm.bias, enc.norm.bias + 1)  # the EMA (target) encoder
    assert tensors_equal(fresh_pred.state_dict(), pred.state_dict())


def test_an_import_the_weights_cannot_settle_says_so(caplog):
    """An encoder-only file with a sincos table is V-JEPA's -- or V-JEPA 2's that kept its
    unused table: detection picks V-JEPA and warns how to choose the other."""
    ckpt = vjepa2_checkpoint()
    encoder_only = {"target_encoder": ckpt["target_encoder"]}
    with caplog.at_level("WARNING", logger="jepalab.interop.checkpoint"):
        assert to_jepalab(encoder_only)["source"] == "vjepa"
    assert "src_format=vjepa2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="jepalab.interop.checkpoint"):
        to_jepalab(ckpt)  # encoder and predictor: no doubt, no warning
    assert "src_format" not in caplog.text
