#!/usr/bin/env python
"""Attention strategies on the real JEPA workloads: waste accounting (CPU) and timings (GPU).

Workloads (sequence lengths drawn from the ``jepalab.masks`` generators with the papers' mask
settings, ``configs/mask/*.yaml``):

* ``ijepa_context`` / ``ijepa_predictor`` -- ViT-H/14 at 224 px (16 x 16 grid), per-GPU batch
  128 (I-JEPA: 16 x 128), 1 context block + 4 targets; encoder 16 heads x 80, predictor
  12 heads x 32; each predictor sequence is a context plus one target block.
* ``vjepa_context`` / ``vjepa_predictor`` -- ViT-L/16, 16 frames at 224 px, tubelet 2
  (8 x 14 x 14 grid), per-GPU batch 24 (3072 / 128), short- and long-range masks; encoder
  16 heads x 64, predictor 12 heads x 32 (context + target = the whole clip per configuration).
* ``ac_predictor`` -- V-JEPA 2-AC: 7 input frames of 258 tokens ([action, state, 256 patches]),
  frame-causal, batch 8, 16 heads x 64.

Strategies: ``triton`` (ours, :mod:`jepalab.kernels.triton_attention`), ``sdpa_padded`` (one
padded batch with a key-padding mask), ``sdpa_dense_mask`` (a dense boolean mask: the
reference implementations' approach), ``trim_min`` (every sequence cut to the batch minimum,
the I-JEPA/V-JEPA reference collators), ``flex`` (FlexAttention, 128 x 128 block sparsity),
``flash_attn_varlen`` (FA2, where installed) and, for frame-causal, ``sdpa_block_loop`` (one
unmasked SDPA call per query frame, jepalab's CPU path).

    python scripts/bench_attention.py --waste        # CPU: computed vs useful pairs (any machine)
    python scripts/bench_attention.py                # GPU: timings, TFLOP/s, peak memory

Waste accounting counts query-key pairs per head: ``useful`` (allowed by the mask, what a
perfect kernel computes), ``computed`` (what the strategy multiplies, including tile padding),
and ``dropped_tokens`` (tokens thrown away). Timing mode reports per candidate the median
time of the forward and of forward + backward, useful TFLOP/s (``4 * H * Dh * useful_pairs``
forward, 2.5x that for the backward, Dao 2023), the fraction of the GPU's dense bf16 peak and
the peak memory above the inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from jepalab.masks import MultiBlock3DMaskGenerator, MultiBlockMaskGenerator

# Dense bf16 tensor-core peaks (vendor datasheets, TFLOP/s without sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}
TRITON_TILE = {"small_head": (128, 64), "large_head": (64, 64)}  # (BLOCK_M, BLOCK_N) fwd
FLEX_BLOCK = 128


@dataclass
class Workload:
    """One attention call: packed sequences (``lengths``), their trimmed lengths under the
    reference collators, and the mask (``causal_block`` for frame-causal)."""

    name: str
    lengths: list[int]
    trimmed: list[int]
    heads: int
    head_dim: int
    causal_block: int | None = None


def _trim(lengths: np.ndarray, groups: int) -> np.ndarray:
    """The reference collators cut each mask configuration's sequences to the batch minimum
    (sequences are sample-major: sequence ``s`` belongs to configuration ``s % groups``)."""
    out = lengths.copy()
    for g in range(groups):
        out[g::groups] = lengths[g::groups].min()
    return out


def workloads(seed: int = 0) -> list[Workload]:
    """The paper-scale workloads of the module docstring, one batch each."""
    rng = np.random.default_rng(seed)
    ij = MultiBlockMaskGenerator((16, 16))(128, rng)  # multiblock.yaml defaults = the paper's
    ctx, tgt = ij.context.lengths.numpy(), ij.targets.lengths.numpy()
    ctx_per_target = np.repeat(ctx, ij.num_targets)  # each target block with its context
    pred = ctx_per_target + tgt
    pred_trim = np.repeat(_trim(ctx, 1), ij.num_targets) + _trim(tgt, ij.num_targets)

    vj = MultiBlock3DMaskGenerator((8, 14, 14))(24, rng)  # short + long range (multiblock3d.yaml)
    vctx, vtgt = vj.context.lengths.numpy(), vj.targets.lengths.numpy()
    k = vj.num_contexts
    frame, steps, batch = 258, 7, 8
    return [
        Workload("ijepa_context", ctx.tolist(), _trim(ctx, 1).tolist(), 16, 80),
        Workload("ijepa_predictor", pred.tolist(), pred_trim.tolist(), 12, 32),
        Workload("vjepa_context", vctx.tolist(), _trim(vctx, k).tolist(), 16, 64),
        Workload(
            "vjepa_predictor",
            (vctx + vtgt).tolist(),
            (_trim(vctx, k) + _trim(vtgt, k)).tolist(),
            12,
            32,
        ),
        Workload("ac_predictor", [frame * steps] * batch, [frame * steps] * batch, 16, 64, frame),
    ]


# -- waste accounting ------------------------------------------------------------------------------
def _allowed_pairs(length: int, block: int | None) -> int:
    if block is None:
        return length * length
    frames, rest = divmod(length, block)
    full = block * block * frames * (frames + 1) // 2  # query frame t sees t + 1 frames
    return full + rest * length  # a partial last frame sees everything


def _triton_pairs(length: int, block: int | None, head_dim: int) -> int:
    """Pairs our forward kernel multiplies: the tiles its loop bounds visit."""
    bm, bn = TRITON_TILE["small_head" if head_dim <= 64 else "large_head"]
    total = 0
    for start_m in range(0, length, bm):
        if block is None:
            hi = length
        else:
            last = min(start_m + bm, length) - 1
            hi = min(length, (last // block + 1) * block)
        total += bm * math.ceil(hi / bn) * bn
    return total


def _flex_pairs(lengths: list[int], block: int | None) -> int:
    """Pairs in the non-empty 128 x 128 blocks of FlexAttention's block mask."""
    if block is not None:  # a dense (B, L) batch, frame-causal per sample
        length = lengths[0]
        n = math.ceil(length / FLEX_BLOCK)
        starts = np.arange(n) * FLEX_BLOCK
        last = np.minimum(starts + FLEX_BLOCK, length) - 1
        nonempty = (starts[None, :] // block) <= (last[:, None] // block)
        return int(nonempty.sum()) * FLEX_BLOCK**2 * len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    n = math.ceil(total / FLEX_BLOCK)
    starts = np.arange(n) * FLEX_BLOCK
    ends = np.minimum(starts + FLEX_BLOCK, total) - 1
    first_doc = np.searchsorted(offsets, starts, side="right") - 1
    last_doc = np.searchsorted(offsets, ends, side="right") - 1
    overlap = (first_doc[:, None] <= last_doc[None, :]) & (first_doc[None, :] <= last_doc[:, None])
    return int(overlap.sum()) * FLEX_BLOCK**2


def waste_accounting(work: Workload) -> dict:
    lengths, block = work.lengths, work.causal_block
    useful = sum(_allowed_pairs(n, block) for n in lengths)
    longest, total = max(lengths), sum(lengths)
    strategies = {
        "triton": sum(_triton_pairs(n, block, work.head_dim) for n in lengths),
        # Dense boolean mask over the packed tokens (varlen) or per sample (frame-causal):
        # SDPA's mask-capable kernels compute every pair and skip none.
        "sdpa_dense_mask": total * total if block is None else len(lengths) * longest**2,
        "flex": _flex_pairs(lengths, block),
    }
    if block is None:
        strategies["sdpa_padded"] = len(lengths) * longest * longest
        strategies["flash_attn_varlen"] = sum(  # FA2 forward tiles, 128 x 128 at these dims
            math.ceil(n / 128) ** 2 * 128 * 128 for n in lengths
        )
        shortest = [(n, n * n) for n in work.trimmed]
        strategies["trim_min"] = sum(pairs for _, pairs in shortest)
    else:
        strategies["sdpa_block_loop"] = useful  # exactly the allowed prefix per query frame
    report = {}
    for name, computed in strategies.items():
        trimmed = name == "trim_min"
        report[name] = {
            "computed_pairs": computed,
            "useful_pairs": computed if trimmed else useful,
            "dropped_tokens": total - sum(work.trimmed) if trimmed else 0,
        }
    # The dense mask itself: packed tokens squared (varlen) or one (L, L) mask (frame-causal).
    report["sdpa_dense_mask"]["mask_bytes"] = total * total if block is None else longest**2
    return {
        "workload": work.name,
        "num_seqs": len(lengths),
        "tokens": total,
        "len_min": min(lengths),
        "len_mean": round(total / len(lengths), 1),
        "len_max": longest,
        "heads": work.heads,
        "head_dim": work.head_dim,
        "causal_block": block,
        "ideal_pairs": useful,
        "strategies": report,
    }


def summarise(runs: list[dict]) -> dict:
    """Sum the counts of several batches of one workload and add the ratios:
    ``useful_fraction`` (useful / computed), ``computed_vs_ideal`` (computed / allowed pairs
    of the untrimmed batch) and ``dropped_fraction`` (dropped / all tokens)."""
    out = {key: runs[0][key] for key in ("workload", "heads", "head_dim", "causal_block")}
    lengths = [r[key] for r in runs for key in ("len_min", "len_max")]
    out.update(
        batches=len(runs),
        num_seqs=runs[0]["num_seqs"],
        len_range=[min(lengths), max(lengths)],
        len_mean=round(statistics.mean(r["len_mean"] for r in runs), 1),
    )
    ideal, tokens = sum(r["ideal_pairs"] for r in runs), sum(r["tokens"] for r in runs)
    out["strategies"] = {}
    for name in runs[0]["strategies"]:
        rows = [r["strategies"][name] for r in runs]
        computed = sum(row["computed_pairs"] for row in rows)
        useful = sum(row["useful_pairs"] for row in rows)
        dropped = sum(row["dropped_tokens"] for row in rows)
        out["strategies"][name] = {
            "useful_fraction": round(useful / computed, 4),
            "computed_vs_ideal": round(computed / ideal, 3),
            "dropped_fraction": round(dropped / tokens, 4),
        }
        if "mask_bytes" in rows[0]:
            out["strategies"][name]["mask_mb"] = round(max(r["mask_bytes"] for r in rows) / 2**20)
    return out


# -- GPU timings ---------------------------------------------------------------------------------
def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _candidates(work: Workload, q, k, v, layout) -> dict[str, Callable[[], torch.Tensor]]:
    import torch.nn.functional as F

    from jepalab.kernels.attention import attention

    block = work.causal_block
    cands: dict[str, Callable[[], torch.Tensor]] = {}
    if block is None:
        cands["triton"] = lambda: attention(q, k, v, layout, backend="triton")
        cands["sdpa_padded"] = lambda: attention(q, k, v, layout, backend="sdpa")
        cands["flex"] = lambda: attention(q, k, v, layout, backend="flex")
        s, length = len(work.trimmed), min(work.trimmed)
        qt, kt, vt = (x[: s * length].view(s, length, *x.shape[1:]).detach() for x in (q, k, v))
        for x in (qt, kt, vt):
            x.requires_grad_()
        cands["trim_min"] = lambda: attention(qt, kt, vt, backend="sdpa")
        try:
            from flash_attn import flash_attn_varlen_func

            cu = layout.offsets.int()
            cands["flash_attn_varlen"] = lambda: flash_attn_varlen_func(
                q, k, v, cu, cu, layout.max_len, layout.max_len
            )
        except ImportError:
            pass
    else:
        b, length = len(work.lengths), work.lengths[0]
        qd, kd, vd = (x.view(b, length, *x.shape[1:]) for x in (q, k, v))
        step = torch.arange(length, device=q.device) // block
        mask = step[None, :] <= step[:, None]  # the reference's dense (L, L) bool mask
        cands["triton"] = lambda: attention(qd, kd, vd, backend="triton", causal_block=block)
        cands["sdpa_dense_mask"] = lambda: F.scaled_dot_product_attention(
            *(x.transpose(1, 2) for x in (qd, kd, vd)), attn_mask=mask
        ).transpose(1, 2)
        cands["sdpa_block_loop"] = lambda: attention(qd, kd, vd, backend="sdpa", causal_block=block)
        cands["flex"] = lambda: attention(qd, kd, vd, backend="flex", causal_block=block)
    return cands


def gpu_timings(work: Workload, dtype: torch.dtype, repeats: int) -> dict:
    from jepalab.kernels.attention import VarlenLayout

    device = torch.device("cuda")
    lengths = torch.tensor(work.lengths)
    layout = VarlenLayout.from_lengths(lengths).to(device)
    shape = (layout.total, work.heads, work.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in "qkv")
    useful = sum(_allowed_pairs(n, work.causal_block) for n in work.lengths)
    fwd_flops = 4 * work.heads * work.head_dim * useful
    name = torch.cuda.get_device_name()
    peak = next((p for key, p in PEAK_BF16_TFLOPS.items() if key in name), None)
    results = {}
    for cand, fn in _candidates(work, q, k, v, layout).items():
        try:
            with torch.no_grad():
                fwd_ms = _time_ms(fn, repeats)
            grad = None

            def fwd_bwd(fn=fn):
                nonlocal grad
                out = fn()
                grad = torch.ones_like(out) if grad is None else grad
                out.backward(grad)

            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwd_bwd_ms = _time_ms(fwd_bwd, repeats)
            peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
        except Exception as exc:  # a candidate that cannot run this shape is reported, not fatal
            results[cand] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        tflops_fwd = fwd_flops / fwd_ms / 1e9
        tflops_all = 3.5 * fwd_flops / fwd_bwd_ms / 1e9
        results[cand] = {
            "fwd_ms": round(fwd_ms, 4),
            "fwd_bwd_ms": round(fwd_bwd_ms, 4),
            "useful_tflops_fwd": round(tflops_fwd, 1),
            "useful_tflops_fwd_bwd": round(tflops_all, 1),
            "peak_fraction_fwd": None if peak is None else round(tflops_fwd / peak, 3),
            "peak_mem_mb": round(peak_mb, 1),
        }
        if cand == "trim_min":
            results[cand]["note"] = "computes fewer tokens (dropped); TFLOP/s over all tokens"
    return {"workload": work.name, "device": name, "dtype": str(dtype), "candidates": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waste", action="store_true", help="CPU waste accounting only")
    parser.add_argument("--batches", type=int, default=8, help="mask batches to average (waste)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (GPU)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = parser.parse_args()
    if args.waste or not torch.cuda.is_available():
        per_batch = [[waste_accounting(w) for w in workloads(seed)] for seed in range(args.batches)]
        report = [summarise(list(runs)) for runs in zip(*per_batch, strict=True)]
        print(json.dumps({"mode": "waste", "workloads": report}, indent=2))
        return
    dtype = getattr(torch, args.dtype)
    report = [gpu_timings(w, dtype, args.repeats) for w in workloads(0)]
    print(json.dumps({"mode": "gpu", "workloads": report}, indent=2))


if __name__ == "__main__":
    main()
