"""Triton kernels for variable-length and frame-causal attention, forward and backward.

The algorithm is FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better
Parallelism and Work Partitioning", Alg. 1 forward, Alg. 2 backward): queries are processed in
tiles of ``BLOCK_M`` rows, keys/values streamed in tiles of ``BLOCK_N``, the softmax is computed
online (running row max ``m`` and row sum ``l``, rescaling the accumulator), and only the
log-sum-exp of each row is kept for the backward pass, which recomputes the probabilities.
Accumulation is fp32 whatever the input dtype (fp16, bf16 or fp32).

One kernel family covers both masks of jepalab, because they are the same thing:

* **varlen** -- ``S`` sequences packed back to back in ``(T, H, Dh)``, described by
  ``cu_seqlens`` offsets (FlashAttention varlen's convention). The grid is
  ``(ceil(max_len / BLOCK_M), S, H)``; a program whose tile starts past its sequence's end
  exits at once, and the key loop stops at the sequence's end, so no padding is ever
  computed beyond the last partial tile. Queries and keys have their own offsets, so a dense
  cross-attention batch ``(B, Lq)`` x ``(B, Lk)`` is the special case of uniform offsets.
* **frame-causal** -- ``causal_block=K`` (a ``tl.constexpr``): query ``i`` sees key ``j`` of
  the same sequence iff ``j // K <= i // K`` (V-JEPA 2-AC's frames of ``K`` tokens; ``K = 1``
  is ordinary causal attention, ``K = 0`` no mask). A dense frame-causal batch is a varlen
  batch of equal lengths. Tiles entirely above the block diagonal are never visited (the loop
  bounds stop there), tiles entirely below it run without a mask, and only the tiles the
  diagonal crosses are masked in registers.

The backward pass is FA2's: a tiny kernel computes ``delta = rowsum(dO * O)``, one kernel
loops over query tiles for each key tile (``dK``, ``dV``) and one over key tiles for each query
tile (``dQ``) -- no atomics, so results are deterministic.

The kernels are registered as PyTorch custom operators (:func:`torch.library.custom_op`,
``jepalab::flash_attn_fwd`` / ``jepalab::flash_attn_bwd``) with fake (meta) implementations and
an autograd formula, so :func:`torch.compile` treats them as opaque nodes without a graph break
and autograd works as for an :class:`torch.autograd.Function`. (``torch.library.triton_op``
would let Inductor see inside the kernel, but it cannot be exercised on a CPU machine with the
Triton interpreter; the opaque op works on both.)

On a machine without a GPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``
set *before* this module is imported: Triton chooses interpreter or compiler when
``@triton.jit`` decorates). The interpreter evaluates ``tl.dot`` with numpy, which has no
bfloat16 and multiplies the raw bits, so bf16 tiles are upcast to fp32 there (the ``UPCAST``
constexpr); on a GPU the tiles stay in bf16 for the tensor cores.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Whether the kernels were decorated for the Triton interpreter (CPU tensors) or the compiler.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)

#: Head dimensions the kernels accept (one register tile holds a whole head).
MAX_HEAD_DIM = 256

_LOG2E = 1.4426950408889634


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _fwd_tiles(
    acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
    lo, hi, k_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL_BLOCK: tl.constexpr,
    MASK_CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Key tiles ``[lo, hi)`` of one query tile: the online-softmax update (FA2 Alg. 1 l. 8-10)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_mask = (cols[:, None] < k_len) & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptrs + start_n * stride_kt, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vt, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # Scores in the log2 domain: exp2 is one MUFU instruction, exp is two.
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        valid = cols[None, :] < k_len
        if MASK_CAUSAL:  # only tiles crossed by the block diagonal pay for this
            valid = valid & ((cols[None, :] // CAUSAL_BLOCK) <= (offs_m[:, None] // CAUSAL_BLOCK))
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no key yet keeps m = -inf; subtracting 0 instead avoids inf - inf = NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_lh, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL_BLOCK: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    start_m = pid_m * BLOCK_M
    if start_m >= q_len:  # the grid is sized for the longest sequence
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_m < q_len
    q_ptrs = Q + (q_start + offs_m[:, None]) * stride_qt + head * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_mask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_ptrs = K + (k_start + offs_n[:, None]) * stride_kt + head * stride_kh + offs_d[None, :]
    v_ptrs = V + (k_start + offs_n[:, None]) * stride_vt + head * stride_vh + offs_d[None, :]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL_BLOCK > 0:
        last_m = tl.minimum(start_m + BLOCK_M, q_len) - 1
        # Keys past the last row's frame are masked for every row: never visited.
        hi = tl.minimum(k_len, (last_m // CAUSAL_BLOCK + 1) * CAUSAL_BLOCK)
        # Keys before the first row's frame end are visible to every row: no mask needed.
        full = tl.minimum((start_m // CAUSAL_BLOCK + 1) * CAUSAL_BLOCK, hi)
        full = (full // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            0, full, k_len, qk_scale, HEAD_DIM, BLOCK_N, CAUSAL_BLOCK, False, UPCAST, PRECISION,
        )  # fmt: skip
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            full, hi, k_len, qk_scale, HEAD_DIM, BLOCK_N, CAUSAL_BLOCK, True, UPCAST, PRECISION,
        )  # fmt: skip
    else:
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            0, k_len, k_len, qk_scale, HEAD_DIM, BLOCK_N, 1, False, UPCAST, PRECISION,
        )  # fmt: skip
    # An empty key set (cross-attention to nothing) gives 0, not 0 / 0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = O + (q_start + offs_m[:, None]) * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(
        o_ptrs, out.to(O.dtype.element_ty), mask=row_mask[:, None] & (offs_d[None, :] < HEAD_DIM)
    )
    # Log-sum-exp in the log2 domain of the scaled scores, all the backward pass needs.
    tl.store(LSE + head * stride_lh + q_start + offs_m, m_i + tl.log2(l_safe), mask=row_mask)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _bwd_delta_kernel(
    O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, stride_dh, total,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """``delta_i = sum_d dO_id O_id`` (FA2 Alg. 2 l. 4), the softmax-backward row term."""
    pid, head = tl.program_id(0), tl.program_id(1)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < total) & (offs_d[None, :] < HEAD_DIM)
    # other=0: padded head-dim columns must add nothing to the row sums.
    o = tl.load(
        O + offs_m[:, None] * stride_ot + head * stride_oh + offs_d[None, :], mask=mask, other=0.0
    )
    do = tl.load(
        DO + offs_m[:, None] * stride_dot + head * stride_doh + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + head * stride_dh + offs_m, delta, mask=offs_m < total)


@triton.jit
def _bwd_dkdv_tiles(
    dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qt, stride_dot,
    offs_m, offs_n, offs_d, lo, hi, q_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, CAUSAL_BLOCK: tl.constexpr,
    MASK_CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Query tiles ``[lo, hi)`` against one key tile, accumulating ``dK`` and ``dV``."""
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        row_mask = rows < q_len
        qd_mask = row_mask[:, None] & (offs_d[None, :] < HEAD_DIM)
        q = tl.load(q_ptrs + start_m * stride_qt, mask=qd_mask, other=0.0)
        do = tl.load(do_ptrs + start_m * stride_dot, mask=qd_mask, other=0.0)
        lse = tl.load(lse_ptrs + start_m, mask=row_mask, other=0.0)
        delta = tl.load(delta_ptrs + start_m, mask=row_mask, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        # Transposed scores (keys x queries) so that dK, dV come out without transposes.
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        p_t = tl.exp2(s_t - lse[None, :])
        valid = row_mask[None, :]
        if MASK_CAUSAL:
            valid = valid & ((offs_n[:, None] // CAUSAL_BLOCK) <= (rows[None, :] // CAUSAL_BLOCK))
        p_t = tl.where(valid, p_t, 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, CU_Q, CU_K,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_lh, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL_BLOCK: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_n, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    start_n = pid_n * BLOCK_N
    if start_n >= k_len:
        return
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < k_len) & (offs_d[None, :] < HEAD_DIM)
    k = tl.load(K + (k_start + offs_n[:, None]) * stride_kt + head * stride_kh + offs_d[None, :],
                mask=kv_mask, other=0.0)  # fmt: skip
    v = tl.load(V + (k_start + offs_n[:, None]) * stride_vt + head * stride_vh + offs_d[None, :],
                mask=kv_mask, other=0.0)  # fmt: skip
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    q_ptrs = Q + (q_start + offs_m[:, None]) * stride_qt + head * stride_qh + offs_d[None, :]
    do_ptrs = DO + (q_start + offs_m[:, None]) * stride_dot + head * stride_doh + offs_d[None, :]
    lse_ptrs = LSE + head * stride_lh + q_start + offs_m
    delta_ptrs = DELTA + head * stride_lh + q_start + offs_m
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if CAUSAL_BLOCK > 0:
        last_n = tl.minimum(start_n + BLOCK_N, k_len) - 1
        # Queries before the first key's frame see none of this tile: never visited.
        lo = ((start_n // CAUSAL_BLOCK) * CAUSAL_BLOCK // BLOCK_M) * BLOCK_M
        # Queries from the last key's frame on see all of it: no mask needed.
        full = tl.cdiv((last_n // CAUSAL_BLOCK) * CAUSAL_BLOCK, BLOCK_M) * BLOCK_M
        full = tl.minimum(tl.maximum(full, lo), q_len)
        dk, dv = _bwd_dkdv_tiles(
            dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qt, stride_dot,
            offs_m, offs_n, offs_d, lo, full, q_len, qk_scale,
            HEAD_DIM, BLOCK_M, CAUSAL_BLOCK, True, UPCAST, PRECISION,
        )  # fmt: skip
        dk, dv = _bwd_dkdv_tiles(
            dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qt, stride_dot,
            offs_m, offs_n, offs_d, full, q_len, q_len, qk_scale,
            HEAD_DIM, BLOCK_M, CAUSAL_BLOCK, False, UPCAST, PRECISION,
        )  # fmt: skip
    else:
        dk, dv = _bwd_dkdv_tiles(
            dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qt, stride_dot,
            offs_m, offs_n, offs_d, 0, q_len, q_len, qk_scale,
            HEAD_DIM, BLOCK_M, 1, False, UPCAST, PRECISION,
        )  # fmt: skip
    dk = dk * sm_scale  # dS was taken w.r.t. the unscaled scores q k^T
    dk_ptrs = DK + (k_start + offs_n[:, None]) * stride_dkt + head * stride_dkh + offs_d[None, :]
    dv_ptrs = DV + (k_start + offs_n[:, None]) * stride_dvt + head * stride_dvh + offs_d[None, :]
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_tiles(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
    lo, hi, k_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL_BLOCK: tl.constexpr,
    MASK_CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Key tiles ``[lo, hi)`` of one query tile, accumulating ``dQ``."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_mask = (cols[:, None] < k_len) & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptrs + start_n * stride_kt, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vt, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        valid = cols[None, :] < k_len
        if MASK_CAUSAL:
            valid = valid & ((cols[None, :] // CAUSAL_BLOCK) <= (offs_m[:, None] // CAUSAL_BLOCK))
        p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, CU_Q, CU_K,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh, stride_lh, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL_BLOCK: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    start_m = pid_m * BLOCK_M
    if start_m >= q_len:
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_m < q_len
    qd_mask = row_mask[:, None] & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(Q + (q_start + offs_m[:, None]) * stride_qt + head * stride_qh + offs_d[None, :],
                mask=qd_mask, other=0.0)  # fmt: skip
    do = tl.load(DO + (q_start + offs_m[:, None]) * stride_dot + head * stride_doh
                 + offs_d[None, :], mask=qd_mask, other=0.0)  # fmt: skip
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + head * stride_lh + q_start + offs_m, mask=row_mask, other=0.0)
    delta = tl.load(DELTA + head * stride_lh + q_start + offs_m, mask=row_mask, other=0.0)
    k_ptrs = K + (k_start + offs_n[:, None]) * stride_kt + head * stride_kh + offs_d[None, :]
    v_ptrs = V + (k_start + offs_n[:, None]) * stride_vt + head * stride_vh + offs_d[None, :]
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL_BLOCK > 0:
        last_m = tl.minimum(start_m + BLOCK_M, q_len) - 1
        hi = tl.minimum(k_len, (last_m // CAUSAL_BLOCK + 1) * CAUSAL_BLOCK)
        full = tl.minimum((start_m // CAUSAL_BLOCK + 1) * CAUSAL_BLOCK, hi)
        full = (full // BLOCK_N) * BLOCK_N
        dq = _bwd_dq_tiles(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            0, full, k_len, qk_scale, HEAD_DIM, BLOCK_N, CAUSAL_BLOCK, False, UPCAST, PRECISION,
        )  # fmt: skip
        dq = _bwd_dq_tiles(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            full, hi, k_len, qk_scale, HEAD_DIM, BLOCK_N, CAUSAL_BLOCK, True, UPCAST, PRECISION,
        )  # fmt: skip
    else:
        dq = _bwd_dq_tiles(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d,
            0, k_len, k_len, qk_scale, HEAD_DIM, BLOCK_N, 1, False, UPCAST, PRECISION,
        )  # fmt: skip
    dq = dq * sm_scale
    dq_ptrs = DQ + (q_start + offs_m[:, None]) * stride_dqt + head * stride_dqh + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=qd_mask)


# ---------------------------------------------------------------------------------------------
# Launchers and the custom operators
# ---------------------------------------------------------------------------------------------
def _new_like(x: Tensor) -> Tensor:
    """Uninitialised output memory shaped like ``x``. A hook: the tests swap in NaN-filled
    memory with NaN margins to prove that every element is written and none outside."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _check_device(q: Tensor) -> None:
    if q.is_cuda and INTERPRET:
        raise RuntimeError(
            "the Triton attention kernels were built for the interpreter (TRITON_INTERPRET=1 "
            "was set when jepalab.kernels.triton_attention was imported); unset it to run on GPU"
        )
    if not q.is_cuda and not INTERPRET:
        raise RuntimeError(
            f"the Triton attention kernels need CUDA tensors (got {q.device}); on a CPU set "
            "TRITON_INTERPRET=1 before importing jepalab.kernels.triton_attention, or use "
            "backend='sdpa'"
        )


def _config(q: Tensor, block_m: int, block_n: int) -> dict:
    head_dim = q.shape[-1]
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"Triton attention supports head dims <= {MAX_HEAD_DIM}, got {head_dim}")
    if q.stride(-1) != 1:
        raise ValueError("Triton attention needs the head dimension contiguous (stride 1)")
    # 128 x 64 tiles for small heads, 64 x 64 for large ones (register pressure), as in FA2's
    # Triton reference; untuned until the benchmark has run on a GPU.
    default_m = 128 if head_dim <= 64 else 64
    return {
        "HEAD_DIM": head_dim,
        "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),
        "BLOCK_M": block_m or default_m,
        "BLOCK_N": block_n or 64,
        "UPCAST": INTERPRET and q.dtype == torch.bfloat16,
        # fp32 inputs get exact fp32 products (tf32 would cost ~1e-3 relative error); fp16 and
        # bf16 take the backend's default (tensor cores).
        "PRECISION": "ieee" if q.dtype == torch.float32 else None,
    }


@torch.library.custom_op("jepalab::flash_attn_fwd", mutates_args=())
def flash_attn_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    max_q: int,
    max_k: int,
    scale: float,
    causal_block: int,
    block_m: int = 0,
    block_n: int = 0,
) -> tuple[Tensor, Tensor]:
    """Forward kernel on packed ``(T, H, Dh)`` tensors; returns ``(out, lse)``, ``lse`` ``(H, Tq)``
    fp32 in the log2 domain of the scaled scores. ``max_k`` is unused here; it sizes the
    backward's dK/dV grid and is an argument so that autograd can save it."""
    _check_device(q)
    cfg = _config(q, block_m, block_n)
    t, h, _ = q.shape
    out = _new_like(q)
    lse = torch.empty(h, t, device=q.device, dtype=torch.float32)
    num_seqs = cu_q.numel() - 1
    grid = (triton.cdiv(max(max_q, 1), cfg["BLOCK_M"]), num_seqs, h)
    if num_seqs and t:
        _fwd_kernel[grid](
            q, k, v, out, lse, cu_q, cu_k,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            out.stride(0), out.stride(1), lse.stride(0), scale * _LOG2E,
            CAUSAL_BLOCK=causal_block, **cfg,
        )  # fmt: skip
    return out, lse


@flash_attn_fwd.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal_block, block_m=0, block_n=0):
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    return out, q.new_empty(q.shape[1], q.shape[0], dtype=torch.float32)


@torch.library.custom_op("jepalab::flash_attn_bwd", mutates_args=())
def flash_attn_bwd(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    max_q: int,
    max_k: int,
    scale: float,
    causal_block: int,
    block_m: int = 0,
    block_n: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward kernels (FA2 Alg. 2): ``(dq, dk, dv)`` shaped like ``(q, k, v)``."""
    _check_device(q)
    cfg = _config(q, block_m, block_n)
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    t, h, _ = q.shape
    num_seqs = cu_q.numel() - 1
    delta = torch.empty_like(lse)
    lse = lse.contiguous()  # delta shares its strides
    dq, dk, dv = _new_like(q), _new_like(k), _new_like(v)
    if not (num_seqs and t):
        return dq.zero_(), dk.zero_(), dv.zero_()
    head, block_d = cfg["HEAD_DIM"], cfg["BLOCK_D"]
    _bwd_delta_kernel[(triton.cdiv(t, 64), h)](
        out, grad_out, delta, out.stride(0), out.stride(1), grad_out.stride(0),
        grad_out.stride(1), delta.stride(0), t, HEAD_DIM=head, BLOCK_D=block_d, BLOCK_M=64,
    )  # fmt: skip
    common = dict(CAUSAL_BLOCK=causal_block, **cfg)
    # The dK/dV kernel keeps a key tile resident and streams query tiles: FA2 swaps the
    # loop order of the forward pass here, so its "BLOCK_N" is the resident tile.
    _bwd_dkdv_kernel[(triton.cdiv(max(max_k, 1), cfg["BLOCK_N"]), num_seqs, h)](
        q, k, v, grad_out, dk, dv, lse, delta, cu_q, cu_k,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        grad_out.stride(0), grad_out.stride(1), dk.stride(0), dk.stride(1),
        dv.stride(0), dv.stride(1), lse.stride(0), scale, scale * _LOG2E, **common,
    )  # fmt: skip
    _bwd_dq_kernel[(triton.cdiv(max(max_q, 1), cfg["BLOCK_M"]), num_seqs, h)](
        q, k, v, grad_out, dq, lse, delta, cu_q, cu_k,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        grad_out.stride(0), grad_out.stride(1), dq.stride(0), dq.stride(1),
        lse.stride(0), scale, scale * _LOG2E, **common,
    )  # fmt: skip
    return dq, dk, dv


@flash_attn_bwd.register_fake
def _(grad_out, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, scale, causal_block, *blocks):
    fmt = torch.contiguous_format
    return tuple(torch.empty_like(x, memory_format=fmt) for x in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_q, cu_k, max_q, max_k, scale, causal_block, block_m, block_n = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
    ctx.args = (max_q, max_k, scale, causal_block, block_m, block_n)


def _backward(ctx, grad_out: Tensor, grad_lse: Tensor):
    q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
    dq, dk, dv = flash_attn_bwd(grad_out, q, k, v, out, lse, cu_q, cu_k, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None, None


flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    max_q: int,
    max_k: int,
    scale: float | None = None,
    causal_block: int = 0,
    block_m: int = 0,
    block_n: int = 0,
) -> Tensor:
    """Softmax attention over packed sequences with the FA2 Triton kernels (differentiable).

    Args:
        q: ``(Tq, H, Dh)`` packed queries; ``k``, ``v``: ``(Tk, H, Dh)`` packed keys/values.
        cu_q, cu_k: ``(S + 1,)`` int32/int64 offsets of the query / key sequences.
        max_q, max_k: longest query / key sequence (sizes the grid).
        scale: softmax scale, default ``Dh ** -0.5``.
        causal_block: ``0`` no mask; ``K`` frame-causal over frames of ``K`` tokens (``1`` is
            causal); needs equal query and key lengths.
        block_m, block_n: tile sizes, ``0`` for the defaults (tests use small tiles to cover
            multi-tile paths with small inputs).

    Returns:
        ``(Tq, H, Dh)``, the dtype of ``q``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"softmax scale must be finite, got {scale}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out, _ = flash_attn_fwd(
        q, k, v, cu_q, cu_k, max_q, max_k, scale, causal_block, block_m, block_n
    )
    return out


__all__ = ["INTERPRET", "MAX_HEAD_DIM", "flash_attention", "flash_attn_bwd", "flash_attn_fwd"]
