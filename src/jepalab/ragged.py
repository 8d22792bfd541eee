"""Packed variable-length sequences: the layout masks, models and attention share.

A JEPA batch keeps a different number of context and target tokens per sample. Instead of
trimming every sample to the batch minimum (the reference code) or padding to the maximum
(wasted compute), jepalab packs sequences back to back, described by ``cu_seqlens``-style
offsets as in FlashAttention's varlen API:

    values  = [s0_0, s0_1, s0_2, s1_0, s1_1, ...]   (total,)
    offsets = [0, 3, 5, ...]                         (num_seqs + 1,)

``Ragged`` holds such a set of integer sequences (token indices into a patch grid);
``segment_arange`` and friends are the vectorised index helpers built on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def segment_arange(starts: Tensor, lengths: Tensor) -> Tensor:
    """Concatenate ``arange(start, start + length)`` for every segment, without a Python loop.

    Args:
        starts: ``(S,)`` first value of each segment.
        lengths: ``(S,)`` non-negative length of each segment.

    Returns:
        ``(lengths.sum(),)`` int64 tensor.
    """
    lengths = lengths.long()
    total = int(lengths.sum())
    if total == 0:
        return starts.new_zeros(0, dtype=torch.long)
    seg_first = torch.cumsum(lengths, 0) - lengths  # where each segment begins in the output
    shift = (starts.long() - seg_first).repeat_interleave(lengths)
    return torch.arange(total, device=starts.device) + shift


def offsets_to_seq_ids(offsets: Tensor) -> Tensor:
    """``(S + 1,)`` offsets -> ``(total,)`` index of the sequence each element belongs to."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.arange(lengths.numel(), device=offsets.device).repeat_interleave(lengths)


def offsets_to_positions(offsets: Tensor) -> Tensor:
    """``(S + 1,)`` offsets -> ``(total,)`` position of each element inside its sequence."""
    lengths = offsets[1:] - offsets[:-1]
    total = int(offsets[-1])
    return torch.arange(total, device=offsets.device) - offsets[:-1].repeat_interleave(lengths)


def lengths_to_offsets(lengths: Tensor) -> Tensor:
    """``(S,)`` lengths -> ``(S + 1,)`` int64 offsets starting at 0."""
    offsets = lengths.new_zeros(lengths.numel() + 1, dtype=torch.long)
    torch.cumsum(lengths.long(), 0, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class Ragged:
    """A batch of integer sequences of different lengths, packed back to back.

    Attributes:
        values: ``(total,)`` int64, the concatenated sequences.
        offsets: ``(num_seqs + 1,)`` int64, ``offsets[i]:offsets[i+1]`` delimits sequence ``i``.
    """

    values: Tensor
    offsets: Tensor

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or self.offsets.numel() < 1:
            raise ValueError(
                f"offsets must be 1-D with at least one entry, got {self.offsets.shape}"
            )
        if self.values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {tuple(self.values.shape)}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_sequences(cls, seqs: Sequence[Tensor | Sequence[int]]) -> Ragged:
        """Pack a list of 1-D index sequences."""
        tensors = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in seqs]
        lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.long)
        values = torch.cat(tensors) if tensors else torch.zeros(0, dtype=torch.long)
        return cls(values, lengths_to_offsets(lengths))

    @classmethod
    def from_dense(cls, dense: Tensor) -> Ragged:
        """Pack a ``(S, L)`` tensor of equal-length sequences."""
        s, length = dense.shape
        lengths = torch.full((s,), length, dtype=torch.long, device=dense.device)
        return cls(dense.reshape(-1).long(), lengths_to_offsets(lengths))

    # -- properties -------------------------------------------------------------------------
    @property
    def num_seqs(self) -> int:
        return self.offsets.numel() - 1

    @property
    def lengths(self) -> Tensor:
        """``(num_seqs,)`` length of each sequence."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def total(self) -> int:
        return self.values.numel()

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if self.num_seqs else 0

    @property
    def is_uniform(self) -> bool:
        """True when every sequence has the same length (then it is a plain dense batch)."""
        lengths = self.lengths
        return bool(self.num_seqs == 0 or (lengths == lengths[0]).all())

    def seq_ids(self) -> Tensor:
        """``(total,)`` index of the sequence each element belongs to."""
        return offsets_to_seq_ids(self.offsets)

    def positions(self) -> Tensor:
        """``(total,)`` position of each element inside its own sequence."""
        return offsets_to_positions(self.offsets)

    def sequences(self) -> list[Tensor]:
        """The sequences as a list of 1-D tensors (for inspection and tests)."""
        return list(torch.split(self.values, self.lengths.tolist()))

    def to_mask(self, seq_len: int) -> Tensor:
        """``(num_seqs, seq_len)`` bool, True at each sequence's indices."""
        mask = torch.zeros(self.num_seqs, seq_len, dtype=torch.bool, device=self.values.device)
        mask[self.seq_ids(), self.values] = True
        return mask

    def flat_index(self, seq_len: int, seqs_per_row: int = 1) -> Tensor:
        """Indices into a ``(rows * seq_len,)`` flattened token grid.

        Sequence ``i`` indexes row ``i // seqs_per_row`` of a ``(rows, seq_len, ...)`` tensor
        (``seqs_per_row > 1`` when each sample owns several sequences, e.g. target blocks).
        """
        rows = torch.div(self.seq_ids(), seqs_per_row, rounding_mode="floor")
        return rows * seq_len + self.values

    def to_dense(self) -> Tensor:
        """``(num_seqs, L)`` tensor; only valid when :attr:`is_uniform`."""
        if not self.is_uniform:
            raise ValueError("to_dense() needs equal-length sequences; use to_padded()")
        return self.values.reshape(self.num_seqs, -1)

    def trimmed(self, length: int) -> Ragged:
        """Keep the first ``length`` elements of every sequence (reference-parity trimming)."""
        lengths = self.lengths.clamp(max=length)
        keep = segment_arange(self.offsets[:-1], lengths)
        return Ragged(self.values[keep], lengths_to_offsets(lengths))

    def select_seqs(self, seqs: Tensor) -> Ragged:
        """The sequences ``seqs`` (int64 indices, in that order) as a new batch."""
        seqs = seqs.to(self.offsets.device)
        lengths = self.lengths[seqs]
        keep = segment_arange(self.offsets[:-1][seqs], lengths)
        return Ragged(self.values[keep], lengths_to_offsets(lengths))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Ragged:
        return Ragged(
            self.values.to(device, non_blocking=non_blocking),
            self.offsets.to(device, non_blocking=non_blocking),
        )
