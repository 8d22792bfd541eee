"""The attention dispatcher: every model in jepalab calls :func:`attention` and nothing else.

Two layouts:

* dense — ``q, k, v`` of shape ``(B, L, H, Dh)``; every sequence has ``L`` tokens.
* varlen — ``q, k, v`` of shape ``(T, H, Dh)`` holding ``S`` sequences packed back to back,
  described by a :class:`VarlenLayout` (``cu_seqlens`` offsets, as in FlashAttention varlen).
  Linear layers run on the packed tokens without any padding; only attention itself needs
  to know where one sequence ends.

Backends:

* ``"sdpa"`` — :func:`torch.nn.functional.scaled_dot_product_attention`. A varlen batch whose
  sequences all have the same length is a reshape (no copy of padding); otherwise the
  sequences are scattered into a padded batch with a key-padding mask. Padding costs only
  inside attention (a few percent of a ViT step), never in the linear layers.
* ``"triton"`` — the FlashAttention-2-style Triton kernels of
  :mod:`jepalab.kernels.triton_attention` (varlen offsets, frame-causal tiles skipped, fp32
  accumulation, forward and backward). CUDA tensors; on a CPU only under the Triton
  interpreter (``TRITON_INTERPRET=1`` before the kernel module is imported), for tests.
* ``"flex"`` — :func:`torch.nn.attention.flex_attention` with a document / frame-causal block
  mask (compiled on CUDA). On a CPU, torch 2.14 runs it eagerly and has no backward, so it is
  for forward-only comparisons there.
* ``"math"`` — explicit softmax(QK^T)V per sequence; slow, the numerical reference for tests.
* ``"auto"`` — the fastest correct backend for the tensors: ``"triton"`` for fp16/bf16 CUDA
  tensors with head dim <= 256 when Triton is importable, ``"sdpa"`` otherwise (every CPU run).

Frame-causal (block-causal) attention, ``causal_block=K`` on a dense batch: tokens come in
consecutive blocks of ``K`` (one block per time step, V-JEPA 2-AC's ``[action, state,
patches]``) and a query of block ``t`` sees every key of blocks ``<= t``. The mask is described
by that one integer, never materialised as an ``L x L`` tensor: the SDPA backend runs one
unmasked call per query block over its key prefix (only the useful half of the work; on the
CPU this beat SDPA with a cached boolean mask by 10-15%), and a kernel can skip the masked
tiles outright. The reference implementation slices a pre-built 66k x 66k boolean mask every
forward (V-JEPA 2 ``ac_predictor``), which also keeps SDPA off its flash path. On a varlen batch
``causal_block`` applies within each sequence (``causal_block=1`` is ordinary causal attention).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.ragged import lengths_to_offsets, offsets_to_positions, offsets_to_seq_ids

BACKENDS = ("auto", "triton", "flex", "sdpa", "math")


@dataclass(frozen=True, eq=False)
class VarlenLayout:
    """Where each packed sequence starts and ends.

    Build it once per batch and reuse it in every layer: the padding indices used by the
    CPU path are computed lazily and cached on the layout.

    Attributes:
        offsets: ``(S + 1,)`` int64 cumulative sequence lengths (``cu_seqlens``).
        max_len: length of the longest sequence.
    """

    offsets: Tensor
    max_len: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_lengths(cls, lengths: Tensor) -> VarlenLayout:
        lengths = lengths.long()
        return cls(lengths_to_offsets(lengths), int(lengths.max()) if lengths.numel() else 0)

    @property
    def num_seqs(self) -> int:
        return self.offsets.numel() - 1

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    @property
    def is_uniform(self) -> bool:
        return self.total == self.num_seqs * self.max_len

    def padded_index(self) -> Tensor:
        """``(T,)`` row of each packed token in a ``(S * max_len)`` padded batch."""
        if "padded_index" not in self._cache:
            seq, pos = offsets_to_seq_ids(self.offsets), offsets_to_positions(self.offsets)
            self._cache["padded_index"] = seq * self.max_len + pos
        return self._cache["padded_index"]

    def key_padding_mask(self) -> Tensor:
        """``(S, 1, 1, max_len)`` bool, True where a key is a real token."""
        if "key_mask" not in self._cache:
            arange = torch.arange(self.max_len, device=self.offsets.device)
            self._cache["key_mask"] = (arange[None, :] < self.lengths[:, None])[:, None, None, :]
        return self._cache["key_mask"]

    def to(self, device: torch.device | str) -> VarlenLayout:
        return VarlenLayout(self.offsets.to(device), self.max_len)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: VarlenLayout | None = None,
    backend: str = "auto",
    scale: float | None = None,
    causal_block: int | None = None,
) -> Tensor:
    """Multi-head softmax attention, ``softmax(q k^T * scale) v`` within each sequence.

    Args:
        q, k, v: ``(B, L, H, Dh)`` dense, or ``(T, H, Dh)`` packed when ``layout`` is given.
        layout: the packed-sequence layout, or ``None`` for a dense batch.
        backend: one of :data:`BACKENDS`.
        scale: softmax scale, default ``Dh ** -0.5``.
        causal_block: frame-causal attention over blocks of this many tokens: query ``i``
            sees key ``j`` of its sequence iff ``j // causal_block <= i // causal_block``.
            Dense batches need ``L`` a multiple of it; varlen sequences may end mid-block.

    Returns:
        Tensor shaped like ``q``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if layout is None:
        if q.ndim != 4:
            raise ValueError(f"dense attention expects (B, L, H, Dh), got {tuple(q.shape)}")
    elif q.ndim != 3 or q.shape[0] != layout.total:
        raise ValueError(
            f"varlen attention expects (T, H, Dh) with T={layout.total}, got {tuple(q.shape)}"
        )
    if causal_block is not None:
        if causal_block < 1:
            raise ValueError(f"causal_block must be >= 1, got {causal_block}")
        if layout is None and (q.shape[1] % causal_block or k.shape[1] != q.shape[1]):
            raise ValueError(
                f"causal_block={causal_block} must divide the sequence length {q.shape[1]} "
                f"(queries and keys of equal length {k.shape[1]})"
            )
    if backend == "auto":
        backend = _auto_backend(q)
    if backend == "triton":
        return _triton_attention(q, k, v, layout, scale, causal_block)
    if backend == "flex":
        return _flex_attention(q, k, v, layout, scale, causal_block)
    if causal_block is not None:
        if layout is not None:
            return _padded_block_causal(q, k, v, layout, causal_block, scale, backend)
        if backend == "math":
            return _math_block_causal(q, k, v, causal_block, scale)
        return _sdpa_block_causal(q, k, v, causal_block, scale)
    if backend == "math":
        return _math_attention(q, k, v, layout, scale)
    return _sdpa_attention(q, k, v, layout, scale)


@functools.cache
def triton_kernels() -> ModuleType | None:
    """:mod:`jepalab.kernels.triton_attention`, or ``None`` where Triton is not installed.

    Imported on first use, not with the package: Triton is an optional GPU dependency, and it
    decides between interpreter and compiler when the kernels are decorated.
    """
    try:
        from jepalab.kernels import triton_attention
    except ImportError:
        return None
    return triton_attention


def _auto_backend(q: Tensor) -> str:
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        kernels = triton_kernels()
        if kernels is not None and not kernels.INTERPRET and q.shape[-1] <= kernels.MAX_HEAD_DIM:
            return "triton"
    return "sdpa"


def _triton_attention(
    q: Tensor, k: Tensor, v: Tensor, layout, scale: float | None, causal_block: int | None
) -> Tensor:
    kernels = triton_kernels()
    if kernels is None:
        raise RuntimeError(
            "attention backend 'triton' needs the triton package (pip install triton)"
        )
    block = causal_block or 0
    if layout is not None:
        offsets, max_len = layout.offsets, layout.max_len
        return kernels.flash_attention(q, k, v, offsets, offsets, max_len, max_len, scale, block)
    # A dense batch is a varlen batch of equal lengths: (B, L, H, Dh) -> (B * L, H, Dh).
    (b, lq, h, d), lk = q.shape, k.shape[1]
    cu_q, cu_k = _uniform_offsets(b, lq, q.device), _uniform_offsets(b, lk, q.device)
    out = kernels.flash_attention(
        q.reshape(b * lq, h, d), k.reshape(b * lk, h, -1), v.reshape(b * lk, h, -1),
        cu_q, cu_k, lq, lk, scale, block,
    )  # fmt: skip
    return out.view(b, lq, h, -1)


@functools.lru_cache(maxsize=64)
def _uniform_offsets(num_seqs: int, length: int, device: torch.device) -> Tensor:
    # Cached: models call this with the same few shapes in every layer of every step.
    return torch.arange(num_seqs + 1, device=device, dtype=torch.int32) * length


def _flex_attention(
    q: Tensor, k: Tensor, v: Tensor, layout, scale: float | None, causal_block: int | None
) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    if layout is None:
        q_, k_, v_ = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, L, Dh)
        block_mask = None if causal_block is None else _flex_mask(None, causal_block, q)
    else:  # one "batch" of all packed tokens, each masked to its own sequence (document mask)
        q_, k_, v_ = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        block_mask = _flex_mask(layout, causal_block, q)
    if q.is_cuda:
        fn = _compiled_flex()
    else:
        fn = flex_attention
        if not torch.is_grad_enabled():  # it refuses inputs that require grad on the CPU
            q_, k_, v_ = q_.detach(), k_.detach(), v_.detach()
    out = fn(q_, k_, v_, block_mask=block_mask, scale=scale)
    return out.transpose(1, 2) if layout is None else out.squeeze(0).transpose(0, 1)


def _flex_mask(layout: VarlenLayout | None, causal_block: int | None, q: Tensor):
    """The FlexAttention block mask (cached on the layout: built once per batch, not per layer)."""
    from torch.nn.attention.flex_attention import create_block_mask

    cache = layout._cache if layout is not None else {}
    key = ("flex_mask", causal_block, str(q.device))
    if key in cache:
        return cache[key]
    step = causal_block or 1
    if layout is None:
        length = q.shape[1]

        def mask_mod(b, h, qi, ki):
            return ki // step <= qi // step
    else:
        length = layout.total
        seq = offsets_to_seq_ids(layout.offsets).to(q.device)
        pos = offsets_to_positions(layout.offsets).to(q.device)

        def mask_mod(b, h, qi, ki):
            same = seq[qi] == seq[ki]
            return same if causal_block is None else same & (pos[ki] // step <= pos[qi] // step)

    cache[key] = create_block_mask(mask_mod, None, None, length, length, device=q.device)
    return cache[key]


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # FlexAttention is only fast compiled; eager it materialises the scores.
    return torch.compile(flex_attention, dynamic=False)


def _padded_block_causal(
    q: Tensor, k: Tensor, v: Tensor, layout, block: int, scale: float | None, backend: str
) -> Tensor:
    """Frame-causal attention within each packed sequence through a padded, masked batch."""
    t, h, d = q.shape
    s, length = layout.num_seqs, layout.max_len
    index = layout.padded_index()
    step = torch.arange(length, device=q.device) // block
    allowed = (step[None, :] <= step[:, None]) & layout.key_padding_mask()  # (S, 1, L, L)

    def pad(x: Tensor) -> Tensor:
        return x.new_zeros(s * length, h, d).index_copy(0, index, x).view(s, length, h, d)

    qp, kp, vp = pad(q), pad(k), pad(v)
    if backend == "math":
        scores = torch.einsum("blhd,bmhd->bhlm", qp, kp) * (d**-0.5 if scale is None else scale)
        out = torch.einsum(
            "bhlm,bmhd->blhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), vp
        )
    else:
        out = _sdpa_dense(qp, kp, vp, allowed, scale)
    return out.reshape(s * length, h, d).index_select(0, index)


def _sdpa_dense(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None):
    # (B, L, H, Dh) -> (B, H, L, Dh) for SDPA, and back.
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2)


def _sdpa_attention(q, k, v, layout: VarlenLayout | None, scale: float | None) -> Tensor:
    if layout is None:
        return _sdpa_dense(q, k, v, None, scale)
    t, h, d = q.shape
    s, length = layout.num_seqs, layout.max_len
    if layout.is_uniform:  # equal lengths: a reshape, no padding at all
        out = _sdpa_dense(*(x.reshape(s, length, h, d) for x in (q, k, v)), None, scale)
        return out.reshape(t, h, d)
    index = layout.padded_index()

    def pad(x: Tensor) -> Tensor:
        return x.new_zeros(s * length, h, d).index_copy(0, index, x).view(s, length, h, d)

    out = _sdpa_dense(pad(q), pad(k), pad(v), layout.key_padding_mask(), scale)
    return out.reshape(s * length, h, d).index_select(0, index)


def _sdpa_block_causal(q, k, v, block: int, scale: float | None) -> Tensor:
    # Query block t against the key prefix of blocks 0..t: no mask, no masked-out work.
    length = q.shape[1]
    if length == block:
        return _sdpa_dense(q, k, v, None, scale)
    outs = [
        _sdpa_dense(q[:, end - block : end], k[:, :end], v[:, :end], None, scale)
        for end in range(block, length + 1, block)
    ]
    return torch.cat(outs, dim=1)


def _math_block_causal(q, k, v, block: int, scale: float | None) -> Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    step = torch.arange(q.shape[1], device=q.device) // block
    allowed = step[None, :] <= step[:, None]  # (L, L): the reference builds it explicitly
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v)


def _math_attention(q, k, v, layout: VarlenLayout | None, scale: float | None) -> Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if layout is None:
        scores = torch.einsum("blhd,bmhd->bhlm", q, k) * scale
        return torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v)
    outs = []
    for start, end in zip(layout.offsets[:-1].tolist(), layout.offsets[1:].tolist(), strict=True):
        qs, ks, vs = q[start:end], k[start:end], v[start:end]
        scores = torch.einsum("lhd,mhd->hlm", qs, ks) * scale
        outs.append(torch.einsum("hlm,mhd->lhd", scores.softmax(-1), vs))
    return torch.cat(outs) if outs else q.new_zeros(q.shape)


def attention_flops(lengths: Tensor, num_heads: int, head_dim: int) -> int:
    """Useful forward FLOPs of attention over sequences of the given lengths (QK^T and AV)."""
    return int(4 * num_heads * head_dim * (lengths.double() ** 2).sum().item())


__all__ = ["BACKENDS", "VarlenLayout", "attention", "attention_flops"]
