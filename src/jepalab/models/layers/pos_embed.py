"""Fixed sine-cosine positional embeddings (Vaswani et al. 2017; 2-D form of MAE / I-JEPA)."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """``(N,)`` positions -> ``(N, dim)`` embedding ``[sin(p * w_k), cos(p * w_k)]``.

    ``w_k = 10000^(-k / (dim / 2))`` for ``k < dim / 2`` (float64 internally for exactness).
    """
    if dim % 2:
        raise ValueError(f"sincos embedding dimension must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: tuple[int, int]) -> Tensor:
    """``(H * W, dim)`` float32 embedding of a row-major patch grid.

    The first half of the channels encodes the column (x), the second half the row (y), the
    layout of the MAE/I-JEPA ``get_2d_sincos_pos_embed`` so released checkpoints line up.
    """
    if dim % 4:
        raise ValueError(f"2-D sincos embedding dimension must be divisible by 4, got {dim}")
    h, w = grid_size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat(
        [sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], 1
    )
    return emb.float()
