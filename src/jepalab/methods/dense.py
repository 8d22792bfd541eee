"""V-JEPA 2.1's dense predictive loss (facebookresearch/vjepa2, ``app/vjepa_2_1``): the pieces
that are not the masked objective itself.

The predictor predicts the context tokens too (``predict_all``), through its own head, and
their loss is added to the masked tokens' with a weight that ramps up during training:
``loss = loss_pred + λ_t * loss_context`` (``train.py``, ``main``/``train_step``:
``loss_fn`` and the loss assembly). A context token's error is weighted by ``1 / sqrt(d)``,
``d`` its Euclidean distance on the token grid to the nearest token its sequence predicts
(``weight_distance_loss``; ``masks_dist.py``, ``compute_mask_distance``): tokens next to the
hidden region count most. The deep supervision -- features of several encoder blocks side by
side -- is :func:`~jepalab.models.vit.distillation_levels` and the ``levels`` of the encoder
and predictor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jepalab.ragged import Ragged, offsets_to_positions


def ramped_weight(step: int, weight: float, ramp: tuple[int, int]) -> float:
    """``λ_t``: 0 before step ``ramp[0]``, linear to ``weight`` at ``ramp[1]``, then held
    (``Lambda_LinearWarmupHold`` in ``app/vjepa_2_1/models/utils/modules.py``; V-JEPA 2.1
    pretrains with ``(15000, 30000)``). ``ramp[0] == ramp[1]``: ``weight`` from that step."""
    start, end = int(ramp[0]), int(ramp[1])
    if end < start or start < 0:
        raise ValueError(f"method.context_loss_ramp must be 0 <= start <= end, got {ramp}")
    if step < start:
        return 0.0
    if step >= end:
        return float(weight)
    return float(weight) * (step - start) / (end - start)


def grid_coordinates(index: Tensor, grid_size: tuple[int, ...]) -> Tensor:
    """``(T, len(grid_size))`` float coordinates (``(t,) h, w``) of flat token indices."""
    coords = []
    rest = index
    for size in reversed(grid_size):
        coords.append(rest % size)
        rest = torch.div(rest, size, rounding_mode="floor")
    return torch.stack(coords[::-1], dim=-1).float()


def context_distance_weights(
    copies: Ragged, targets: Ragged, grid_size: tuple[int, ...], chunk_elements: int = 1 << 24
) -> Tensor:
    """``1 / sqrt(d)`` for every token of ``copies`` (the context of each target sequence,
    :meth:`~jepalab.masks.multiblock.MaskBatch.context_copies`), ``d >= 1`` the distance on
    the grid to the nearest token of the same sequence of ``targets``.

    Sequences are processed in chunks of about ``chunk_elements`` pairwise distances, so a
    large video grid does not need a ``(Tc, Tt)`` matrix per sample at once.
    """
    if copies.num_seqs != targets.num_seqs:
        raise ValueError(f"{copies.num_seqs} context copies for {targets.num_seqs} targets")
    ctx, tgt = _Padder(copies, grid_size), _Padder(targets, grid_size)
    out = torch.empty(copies.total, device=copies.values.device)
    per_seq = max(1, ctx.width * tgt.width)
    step = max(1, chunk_elements // per_seq)
    for first in range(0, copies.num_seqs, step):
        last = min(first + step, copies.num_seqs)
        a, valid = ctx.chunk(first, last, fill=0.0)
        b, _ = tgt.chunk(first, last, fill=_FAR)
        # not the matrix-product form: exact on integer coordinates, and no cancellation
        dist = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
        out[ctx.offsets[first] : ctx.offsets[last]] = dist.amin(-1)[valid].clamp_min(1.0).rsqrt()
    return out


_FAR = 1.0e6  # padding coordinate of targets: never the nearest


class _Padder:
    """Packed sequences of grid coordinates, cut into padded ``(n, L, dims)`` chunks."""

    def __init__(self, seqs: Ragged, grid_size: tuple[int, ...]) -> None:
        self.xyz = grid_coordinates(seqs.values, grid_size)
        self.seq = seqs.seq_ids().to(self.xyz.device)
        self.pos = offsets_to_positions(seqs.offsets).to(self.xyz.device)
        self.lengths = seqs.lengths.to(self.xyz.device)
        self.offsets = seqs.offsets.tolist()
        self.width = int(seqs.lengths.max()) if seqs.num_seqs else 0

    def chunk(self, first: int, last: int, fill: float) -> tuple[Tensor, Tensor]:
        """Sequences ``first..last-1``, padded with ``fill``, and the mask of real tokens."""
        lo, hi = self.offsets[first], self.offsets[last]
        out = self.xyz.new_full((last - first, max(self.width, 1), self.xyz.shape[1]), fill)
        out[self.seq[lo:hi] - first, self.pos[lo:hi]] = self.xyz[lo:hi]
        valid = torch.arange(out.shape[1], device=out.device) < self.lengths[first:last, None]
        return out, valid


__all__ = ["context_distance_weights", "grid_coordinates", "ramped_weight"]
