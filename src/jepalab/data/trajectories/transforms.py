"""Frame transforms shared by the trajectory datasets: output channels, normalisation, and
uint8 frames to normalised float tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def _native_channels(frame_shape: Sequence[int]) -> int:
    return 1 if len(frame_shape) == 2 else int(frame_shape[2])


def _check_channels(channels: int | None, native: int, owner: str) -> int:
    """Output channels: ``native``, or 3 -> 1 (luma) / 1 -> 3 (repeated) on request."""
    if channels is None or channels == native:
        return native
    if (native, channels) in ((3, 1), (1, 3)):
        return int(channels)
    raise ValueError(
        f"{owner}: channels={channels} cannot be made from {native}-channel frames; use None "
        "(as stored), 1 (from RGB) or 3 (from grayscale)."
    )


def _normalisation(
    mean: float | Sequence[float], std: float | Sequence[float], channels: int, owner: str
) -> tuple[Tensor, Tensor]:
    """``mean``/``std`` as ``(C, 1, 1)`` tensors (a scalar applies to every channel)."""
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if len(m) not in (1, channels) or len(s) not in (1, channels):
        raise ValueError(
            f"{owner}: mean/std need 1 or {channels} values, got mean={mean}, std={std}."
        )
    if not bool((s > 0).all()):
        raise ValueError(f"{owner}: std must be positive, got {std}.")
    return m.expand(channels).reshape(channels, 1, 1), s.expand(channels).reshape(channels, 1, 1)


def frames_to_tensor(frames: np.ndarray, channels: int, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, C0)`` -> float32 ``(N, channels, H, W)``, scaled to
    ``[0, 1]`` then ``(x - mean) / std``; RGB -> 1 channel is ITU-R 601-2 luma."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.to(torch.float32).div_(255.0)
    if x.shape[1] == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return (x - mean) / std
