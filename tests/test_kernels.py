"""Triton attention kernels (varlen, frame-causal) against a float64 reference, and the dispatcher.

Without a GPU the kernels run under the Triton interpreter on CPU tensors; Triton picks the
interpreter when ``@triton.jit`` decorates, so ``TRITON_INTERPRET=1`` is set here, before the
kernel module is first imported (nothing else imports it on a CPU machine: ``auto`` picks
SDPA there). On a GPU machine the same tests run compiled on CUDA tensors. The interpreter is
slow, so shapes are small and tiles are 16 x 16 to still cover multi-tile paths.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from jepalab.kernels.attention import VarlenLayout, attention  # noqa: E402
from jepalab.masks import MultiBlock3DMaskGenerator, MultiBlockMaskGenerator  # noqa: E402

# (the package re-exports the function `attention`, which shadows the module's name)
dispatcher = importlib.import_module("jepalab.kernels.attention")
kernels = dispatcher.triton_kernels()
if kernels is None or (torch.cuda.is_available() == kernels.INTERPRET):
    pytest.skip(
        "the Triton kernels were imported for the wrong device before this module set "
        "TRITON_INTERPRET", allow_module_level=True
    )  # fmt: skip
DEVICE = "cpu" if kernels.INTERPRET else "cuda"
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


# -- reference and helpers ----------------------------------------------------------------------
def reference(q, k, v, lens_q, lens_k, causal_block=0, scale=None):
    """float64 softmax attention, one sequence at a time with an explicit dense mask."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    outs, sq, sk = [], 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        qs, ks, vs = q[sq : sq + lq].double(), k[sk : sk + lk].double(), v[sk : sk + lk].double()
        scores = torch.einsum("lhd,mhd->hlm", qs, ks) * scale
        if causal_block:
            step_q = torch.arange(lq, device=q.device) // causal_block
            step_k = torch.arange(lk, device=q.device) // causal_block
            scores = scores.masked_fill(step_k[None, :] > step_q[:, None], float("-inf"))
        outs.append(torch.einsum("hlm,mhd->lhd", scores.softmax(-1), vs))
        sq, sk = sq + lq, sk + lk
    return torch.cat(outs)


def rel_err(a, b) -> float:
    """``|a - b| / |b|`` (Frobenius); the floor keeps an exactly-zero reference (the query
    gradient of a length-1 sequence) from turning rounding noise into a huge ratio."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-2)).item()


def canary(shape, dtype, pad: int = 3, extra_d: int = 5):
    """A tensor of ``shape`` (T, H, D) inside NaN memory: ``pad`` NaN rows before and after, and
    ``extra_d`` NaN columns after each head, so any out-of-bounds read poisons the result."""
    t, h, d = shape
    buf = torch.full((t + 2 * pad, h, d + extra_d), float("nan"), dtype=dtype, device=DEVICE)
    view = buf[pad : pad + t, :, :d]
    view.copy_(torch.randn(shape, dtype=dtype, device=DEVICE))
    return view.requires_grad_()


@contextlib.contextmanager
def canary_outputs():
    """Kernel outputs allocated inside NaN memory (as :func:`canary`): on exit, every output
    element must have been written (finite) and every margin element left alone (NaN)."""
    buffers = []

    def new_like(x):
        t, h, d = x.shape
        buf = torch.full((t + 6, h, d + 5), float("nan"), dtype=x.dtype, device=x.device)
        buffers.append(buf)
        return buf[3 : 3 + t, :, :d]

    original, kernels._new_like = kernels._new_like, new_like
    try:
        yield
    finally:
        kernels._new_like = original
    for buf in buffers:
        t, d = buf.shape[0] - 6, buf.shape[2] - 5
        assert torch.isfinite(buf[3 : 3 + t, :, :d]).all(), "an output element was not written"
        inside = torch.zeros(buf.shape, dtype=torch.bool, device=buf.device)
        inside[3 : 3 + t, :, :d] = True
        assert buf[~inside].isnan().all(), "a kernel wrote outside its output"


def check_against_reference(lens, dtype, causal_block=0, heads=2, head_dim=24, lens_k=None):
    lens_k = lens if lens_k is None else lens_k
    cu_q = torch.tensor([0, *lens], device=DEVICE).cumsum(0)
    cu_k = torch.tensor([0, *lens_k], device=DEVICE).cumsum(0)
    q = canary((sum(lens), heads, head_dim), dtype)
    k, v = (canary((sum(lens_k), heads, head_dim), dtype) for _ in range(2))
    with canary_outputs():
        out = kernels.flash_attention(
            q, k, v, cu_q, cu_k, max(lens), max(lens_k), causal_block=causal_block,
            block_m=16, block_n=16,
        )  # fmt: skip
        grad = torch.randn(out.shape, dtype=dtype, device=DEVICE)
        grads = torch.autograd.grad(out, (q, k, v), grad)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = reference(q64, k64, v64, lens, lens_k, causal_block)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad.double())
    for name, got, want in zip(["o", "q", "k", "v"], (out, *grads), (ref, *ref_grads), strict=True):
        assert torch.isfinite(got).all(), f"{name}: missed write or out-of-bounds read"
        err = rel_err(got, want)
        assert err < TOL[dtype], f"{name}: relative error {err:.2e} in {dtype}"


def collator_lengths(kind: str, seed: int = 0) -> list[int]:
    """Context lengths from the real mask generators (paper settings) on small grids."""
    rng = np.random.default_rng(seed)
    if kind == "ijepa":  # 1 context block, 4 targets removed, 8 x 8 grid
        masks = MultiBlockMaskGenerator((8, 8), min_keep=4)(3, rng)
    else:  # V-JEPA short-range + long-range configurations on a (2, 6, 6) tubelet grid
        masks = MultiBlock3DMaskGenerator((2, 6, 6))(2, rng)
    return masks.context.lengths.tolist() + masks.targets.lengths.tolist()[:3]


# -- the kernels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", ["ijepa", "vjepa"])
def test_varlen_matches_float64_reference_on_collator_lengths(kind, dtype):
    check_against_reference(collator_lengths(kind), dtype)


def test_varlen_causal_matches_float64_reference():
    check_against_reference([1, 19, 33, 7], torch.float32, causal_block=1)


@pytest.mark.parametrize(
    "lens",
    [[1], [40], [1, 1, 1], [3, 1, 2, 1, 2, 3, 1, 1, 2, 3, 1, 2]],
    ids=["length-1", "single-sequence", "all-length-1", "many-short"],
)
def test_varlen_edge_cases(lens):
    check_against_reference(lens, torch.float32, heads=1, head_dim=16)


@pytest.mark.parametrize(
    "frame,lens", [(5, [15, 10]), (7, [21, 12]), (1, [9, 17])], ids=["F5", "F7-ragged", "F1"]
)
def test_frame_causal_matches_float64_reference(frame, lens):
    """Frames that do and do not align with the 16-token tiles, a sequence ending mid-frame."""
    check_against_reference(lens, torch.float32, causal_block=frame, heads=1)


def test_frame_causal_fp16():
    check_against_reference([24, 24], torch.float16, causal_block=6, heads=1, head_dim=32)


def test_bf16_is_upcast_in_the_interpreter_and_stays_accurate():
    check_against_reference([9, 20], torch.bfloat16, causal_block=4, heads=1, head_dim=16)


def test_cross_attention_with_different_query_and_key_lengths():
    check_against_reference([3, 1, 5], torch.float32, lens_k=[20, 7, 2], heads=1, head_dim=16)


# -- the dispatcher -------------------------------------------------------------------------------
def test_auto_keeps_sdpa_on_cpu():
    q = torch.randn(2, 4, 2, 8)
    assert dispatcher._auto_backend(q) == "sdpa"
    assert dispatcher._auto_backend(q.half()) == "sdpa"


@pytest.mark.parametrize("causal_block", [None, 1, 4])
def test_dispatcher_backends_agree_on_a_varlen_batch(causal_block):
    layout = VarlenLayout.from_lengths(torch.tensor([5, 12, 1, 8])).to(DEVICE)
    q, k, v = (torch.randn(layout.total, 2, 16, device=DEVICE) for _ in range(3))
    ref = attention(q, k, v, layout, backend="math", causal_block=causal_block)
    for backend in ("triton", "sdpa"):
        out = attention(q, k, v, layout, backend=backend, causal_block=causal_block)
        assert rel_err(out, ref) < 1e-5, backend


def test_dispatcher_dense_frame_causal_and_cross_attention():
    q, k, v = (torch.randn(2, 12, 2, 16, device=DEVICE) for _ in range(3))
    ref = attention(q, k, v, backend="math", causal_block=4)
    assert rel_err(attention(q, k, v, backend="triton", causal_block=4), ref) < 1e-5
    kv = torch.randn(2, 7, 2, 16, device=DEVICE)
    ref = attention(q, kv, kv, backend="math", scale=0.3)
    assert rel_err(attention(q, kv, kv, backend="triton", scale=0.3), ref) < 1e-5


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_forward_matches_math():
    """FlexAttention on the CPU: eager, forward only (torch 2.14 has no CPU backward)."""
    layout = VarlenLayout.from_lengths(torch.tensor([6, 11, 3]))
    q, k, v = (torch.randn(layout.total, 2, 8) for _ in range(3))
    with torch.no_grad():
        for block in (None, 2):
            ref = attention(q, k, v, layout, backend="math", causal_block=block)
            out = attention(q, k, v, layout, backend="flex", causal_block=block)
            assert rel_err(out, ref) < 1e-5


def test_kernel_is_a_custom_op_that_compiles_without_graph_breaks():
    """fullgraph: the kernels are opaque custom ops with fake implementations and autograd.
    (The dispatcher itself reads ``int(offsets[-1])`` of a layout, host data that dynamo
    cannot trace without a graph break; the kernel call is called directly here.)"""
    cu = torch.tensor([0, 7, 10], device=DEVICE)
    q, k, v = (torch.randn(10, 1, 16, device=DEVICE, requires_grad=True) for _ in range(3))

    def loss(q, k, v):
        return kernels.flash_attention(q, k, v, cu, cu, 7, 7, causal_block=2).square().sum()

    eager = torch.autograd.grad(loss(q, k, v), (q, k, v))
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    for a, b in zip(eager, torch.autograd.grad(compiled(q, k, v), (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


# -- the models, end to end ---------------------------------------------------------------------
def _set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if hasattr(module, "backend") and hasattr(module, "qkv"):
            module.backend = backend


def _forward_backward(model, run, backend):
    _set_backend(model, backend)
    model.zero_grad()
    out = run()
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_backends_agree(model, run):
    out_sdpa, grads_sdpa = _forward_backward(model, run, "sdpa")
    out_triton, grads_triton = _forward_backward(model, run, "triton")
    assert rel_err(out_triton, out_sdpa) < 1e-4
    assert len(grads_triton) == len(grads_sdpa)
    for g, r in zip(grads_triton, grads_sdpa, strict=True):
        assert rel_err(g, r) < 1e-3  # tiny gradients of tiny models: sum of rounding errors


def test_encoder_and_predictor_match_sdpa_end_to_end():
    from jepalab import create_encoder, create_predictor
    from jepalab.ragged import Ragged

    enc = create_encoder("vit_tiny_patch16", img_size=16, patch_size=4, depth=1, embed_dim=32,
                         num_heads=2).to(DEVICE)  # fmt: skip
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    keep = Ragged.from_sequences([[0, 1, 2, 5, 9, 15], [3, 4, 7]]).to(DEVICE)
    _assert_backends_agree(enc, lambda: enc(x, keep))

    pred = create_predictor("masked_vit_predictor", grid_size=(4, 4), encoder_dim=32,
                            embed_dim=32, depth=1, num_heads=2).to(DEVICE)  # fmt: skip
    feats = torch.randn(keep.total, 32, device=DEVICE)
    targets = Ragged.from_sequences([[10, 11], [12], [0, 8], [14, 13, 6]]).to(DEVICE)
    _assert_backends_agree(pred, lambda: pred(feats, keep, targets))


def test_video_encoder_with_rope_matches_sdpa_end_to_end():
    """V-JEPA 2 style: tubelets, 3-D RoPE, two contexts per clip (packed)."""
    from jepalab.models import VisionTransformer
    from jepalab.ragged import Ragged

    enc = VisionTransformer(img_size=8, patch_size=4, num_frames=4, embed_dim=48, depth=1,
                            num_heads=2, pos_embed="rope").to(DEVICE)  # fmt: skip
    x = torch.randn(2, 3, 4, 8, 8, device=DEVICE)
    keep = Ragged.from_sequences([[0, 1, 5, 7], [2, 3], [4, 6], [0, 1, 2, 3, 4, 5]]).to(DEVICE)
    _assert_backends_agree(enc, lambda: enc(x, keep))


def test_action_predictor_matches_sdpa_end_to_end():
    from jepalab.models import ActionConditionedPredictor

    pred = ActionConditionedPredictor(
        grid_size=(2, 3), encoder_dim=16, action_dim=2, state_dim=3, embed_dim=32, depth=1,
        num_heads=2,
    ).to(DEVICE)  # fmt: skip
    z = torch.randn(2, 3, 6, 16, device=DEVICE)
    a, s = torch.randn(2, 3, 2, device=DEVICE), torch.randn(2, 3, 3, device=DEVICE)
    _assert_backends_agree(pred, lambda: pred(z, a, s))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ijepa", "vjepa"])
def test_training_runs_are_unchanged_when_the_backend_is_switched(method, request):
    """A few optimiser steps of a tiny I-JEPA / V-JEPA run through the shared Trainer give the
    same losses with the Triton kernels as with SDPA (the dispatcher is the only difference).
    The AC run passes too (rtol 1e-4) but takes ~110 s interpreted; its predictor is covered
    forward and backward by test_action_predictor_matches_sdpa_end_to_end."""
    from jepalab.methods.build import build_experiment
    from jepalab.train.setup import build_trainer

    fixture = {"ijepa": "tiny_cfg", "vjepa": "tiny_video_cfg", "action": "tiny_action_cfg"}
    losses = {}
    for backend in ("sdpa", "triton"):
        cfg = request.getfixturevalue(fixture[method])
        cfg.encoder.attn_backend = backend
        cfg.trainer.max_steps = 3
        cfg.run_dir = f"{cfg.run_dir}_{backend}"
        torch.manual_seed(0)
        losses[backend] = build_trainer(cfg, build_experiment(cfg)).fit()
    assert len(losses["triton"]) == 3
    np.testing.assert_allclose(losses["triton"], losses["sdpa"], rtol=1e-4)
