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
* ``"math"`` — explicit softmax(QK^T)V per sequence; slow, the numerical reference for tests.
* ``"auto"`` — the fastest correct backend for the device (``"sdpa"`` today; the Triton
  varlen kernels of the GPU-kernel work plug in here).

Frame-causal (block-causal) attention, ``causal_block=K`` on a dense batch: tokens come in
consecutive blocks of ``K`` (one block per time step, V-JEPA 2-AC's ``[action, state,
patches]``) and a query of block ``t`` sees every key of blocks ``<= t``. The mask is described
by that one integer, never materialised as an ``L x L`` tensor: the SDPA backend runs one
unmasked call per query block over its key prefix (only the useful half of the work; on the
CPU this beat SDPA with a cached boolean mask by 10-15%), and a kernel can skip the masked
tiles outright. The reference implementation slices a pre-built 66k x 66k boolean mask every
forward (V-JEPA 2 ``ac_predictor``), which also keeps SDPA off its flash path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.ragged import lengths_to_offsets, offsets_to_positions, offsets_to_seq_ids

BACKENDS = ("auto", "sdpa", "math")


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
        causal_block: frame-causal attention over blocks of this many tokens (dense only;
            ``L`` must be a multiple of it): query ``i`` sees key ``j`` iff
            ``j // causal_block <= i // causal_block``.

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
        if layout is not None:
            raise ValueError("causal_block is supported on dense (B, L, H, Dh) batches only")
        if causal_block < 1 or q.shape[1] % causal_block or k.shape[1] != q.shape[1]:
            raise ValueError(
                f"causal_block={causal_block} must divide the sequence length {q.shape[1]} "
                f"(queries and keys of equal length {k.shape[1]})"
            )
        if backend == "math":
            return _math_block_causal(q, k, v, causal_block, scale)
        return _sdpa_block_causal(q, k, v, causal_block, scale)
    if backend == "math":
        return _math_attention(q, k, v, layout, scale)
    return _sdpa_attention(q, k, v, layout, scale)


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
