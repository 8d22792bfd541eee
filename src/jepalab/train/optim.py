"""Optimiser construction: AdamW with biases and norm/1-D parameters excluded from decay."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    As in I-JEPA (``src/helper.py``): biases and every 1-D parameter (norm scales) get no
    weight decay. Frozen parameters (``requires_grad=False``, e.g. the EMA target) are left
    out. The decayed group is first and carries ``apply_wd=True`` for the WD schedule.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused=None`` uses the fused kernel where supported."""
    groups = param_groups(model)
    if not groups[0]["params"] and not groups[1]["params"]:
        raise ValueError("the model has no trainable parameters")
    if fused is None:
        fused = True  # one kernel for all parameters, on CPU and CUDA (torch >= 2.4)
    return torch.optim.AdamW(
        groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, fused=fused
    )
