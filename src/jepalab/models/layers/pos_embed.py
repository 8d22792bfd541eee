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


def sincos_3d(dim: int, grid_size: tuple[int, int, int]) -> Tensor:
    """``(T * H * W, dim)`` float32 embedding of a ``(t, h, w)``-major tubelet grid (V-JEPA).

    Half of the channels encode time, a quarter each the row and the column, concatenated as
    ``[time, row, column]`` -- the layout of V-JEPA's ``get_3d_sincos_pos_embed``
    (``uniform_power=False``) so released checkpoints line up.
    """
    if dim % 8:
        raise ValueError(f"3-D sincos embedding dimension must be divisible by 8, got {dim}")
    t, h, w = grid_size
    times, rows, cols = torch.meshgrid(
        torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"
    )
    emb = torch.cat(
        [
            sincos_1d(dim // 2, times.reshape(-1)),
            sincos_1d(dim // 4, rows.reshape(-1)),
            sincos_1d(dim // 4, cols.reshape(-1)),
        ],
        1,
    )
    return emb.float()


def sincos_grid(dim: int, grid_size: tuple[int, ...]) -> Tensor:
    """The fixed sincos table of a 2-D patch grid (I-JEPA) or a 3-D tubelet grid (V-JEPA)."""
    if len(grid_size) == 2:
        return sincos_2d(dim, grid_size)  # type: ignore[arg-type]
    if len(grid_size) == 3:
        return sincos_3d(dim, grid_size)  # type: ignore[arg-type]
    raise ValueError(f"sincos positions need a 2-D or 3-D grid, got {grid_size}")
