"""Rotary position embeddings over a patch grid (Su et al. 2021, RoFormer, Eq. 34; the 3-D
axial form of V-JEPA 2, Assran et al. 2025, Sec. 2).

Each attention head's channels are split into one chunk per grid axis (time, row, column for
video; row, column for images) of ``2 * ((head_dim // ndim) // 2)`` channels; a chunk rotates
consecutive channel pairs ``(x[2i], x[2i+1])`` by ``position * base^(-2i / chunk)``. Channels
left over by the split are not rotated. Because positions are looked up from token indices,
any subset of tokens (a context, a target block) gets exactly the rotation its place in the
grid implies, and ``q . k`` depends only on the offset between the two tokens.

V-JEPA 2's release expands the angles with ``.repeat`` where ``repeat_interleave`` was meant,
so the two channels of a pair are rotated by different angles (not a rotation). Its
checkpoints were trained that way; ``reference_layout=True`` reproduces it for loading them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rope_axis_dim(head_dim: int, num_axes: int) -> int:
    """Channels rotated per axis: the largest even number ``<= head_dim / num_axes``."""
    return 2 * ((head_dim // num_axes) // 2)


def rope_angles(
    positions: Tensor, head_dim: int, base: float = 10000.0, reference_layout: bool = False
) -> Tensor:
    """``(N, num_axes)`` grid coordinates -> ``(N, head_dim)`` rotation angle of every channel.

    Channel ``c`` of a pair ``(2i, 2i+1)`` is rotated by ``angles[:, 2i]`` (both entries of a
    pair hold the same angle, except with ``reference_layout``); unrotated channels get 0.
    """
    num, num_axes = positions.shape
    axis_dim = rope_axis_dim(head_dim, num_axes)
    if axis_dim == 0:
        raise ValueError(f"head_dim {head_dim} is too small for {num_axes}-axis RoPE")
    half = axis_dim // 2
    omega = 1.0 / base ** (torch.arange(half, dtype=torch.float64) / half)
    chunks = []
    for axis in range(num_axes):
        freqs = positions[:, axis].double()[:, None] * omega[None, :]  # (N, half)
        if reference_layout:
            chunks.append(freqs.repeat(1, 2))  # [f0..f_{h-1}, f0..f_{h-1}] (vjepa2 release)
        else:
            chunks.append(freqs.repeat_interleave(2, dim=1))  # [f0, f0, f1, f1, ...]
    chunks.append(positions.new_zeros(num, head_dim - num_axes * axis_dim, dtype=torch.float64))
    return torch.cat(chunks, dim=1)


def rotate_pairs(x: Tensor) -> Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`` over the last dimension."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x (..., head_dim)`` by angles whose ``cos``/``sin`` broadcast against it."""
    return x * cos + rotate_pairs(x) * sin


class GridRoPE(nn.Module):
    """Rotary tables for every token of a ``grid_size`` grid, looked up by token index.

    ``forward(index)`` returns ``(cos, sin)`` of shape ``(len(index), 1, head_dim)`` (or
    ``(N, 1, head_dim)`` for the whole grid), ready to broadcast over the heads of
    ``(..., tokens, heads, head_dim)`` queries and keys.
    """

    def __init__(
        self,
        grid_size: tuple[int, ...],
        head_dim: int,
        base: float = 10000.0,
        reference_layout: bool = False,
    ) -> None:
        super().__init__()
        self.grid_size, self.head_dim = tuple(int(s) for s in grid_size), head_dim
        self.reference_layout = reference_layout
        coords = torch.stack(
            torch.meshgrid(*(torch.arange(s) for s in self.grid_size), indexing="ij"), dim=-1
        ).reshape(-1, len(self.grid_size))
        angles = rope_angles(coords, head_dim, base, reference_layout)
        # Deterministic functions of the grid: rebuilt on construction, never checkpointed.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cos, sin = (self.cos, self.sin) if index is None else (self.cos[index], self.sin[index])
        return cos[:, None, :], sin[:, None, :]
