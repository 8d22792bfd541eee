"""Which device a command runs on: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """``auto``: this process's GPU (``cuda:LOCAL_RANK``) if there is one, else the CPU.

    A named CUDA device without CUDA is a ``ValueError`` naming ``key`` (the option that
    chose it, e.g. ``trainer.device``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but CUDA is not available; use 'cpu'")
    return device


__all__ = ["resolve_device"]
