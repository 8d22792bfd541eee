"""The EMA target encoder (I-JEPA Sec. 3; BYOL, Grill et al. 2020, Eq. 1).

``target <- m * target + (1 - m) * online`` after every optimiser step, with the momentum
``m`` rising linearly from 0.996 to 1.0 over the run (I-JEPA ``ema: [0.996, 1.0]``).

:class:`OnlineTarget` is the alternative without EMA (``method.target=online``): the targets
come from the context encoder itself, without gradient (SimSiam's stop-gradient; LeJEPA's
setting). Alone it lets a JEPA collapse; it is meant to be paired with a regulariser
(:mod:`jepalab.methods.regularizers`).
"""

from __future__ import annotations

import copy as _copy

import torch
from torch import nn


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear momentum schedule: ``start`` at step 0, ``end`` at ``total_steps``."""
    if total_steps <= 0:
        return end
    progress = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * progress


class EMATarget(nn.Module):
    """A frozen copy of an encoder, updated as an exponential moving average of it.

    The copy never receives gradients (``requires_grad=False``) and stays in eval mode.
    :meth:`update` moves every parameter in one fused ``torch._foreach_lerp_`` call.
    """

    def __init__(self, online: nn.Module, copy: bool = True) -> None:
        """``copy=False``: ``online`` itself becomes the target (a module built to be one,
        e.g. a pretrained encoder), frozen and in eval mode."""
        super().__init__()
        module = _copy.deepcopy(online) if copy else online
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> EMATarget:
        return super().train(False)  # the target is never in training mode

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """``target = momentum * target + (1 - momentum) * online``, parameters and buffers."""
        target_params = list(self.module.parameters())
        online_params = list(online.parameters())
        if len(target_params) != len(online_params):
            raise RuntimeError("EMA target and online encoder have different parameter lists")
        if momentum < 1.0:
            torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
        for tb, ob in zip(self.module.buffers(), online.buffers(), strict=True):
            tb.copy_(ob)


class OnlineTarget(nn.Module):
    """The online encoder used as its own target (no EMA): ``target(x) == online(x)``.

    Holds a *reference* to the online encoder, not a copy and not a submodule, so it adds no
    parameters or checkpoint keys; :attr:`module` is the online encoder (what evaluations of
    "the target encoder" then read). Callers compute targets under ``torch.no_grad()``.
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self._online = (online,)  # a tuple hides it from nn.Module's registration

    @property
    def module(self) -> nn.Module:
        return self._online[0]

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def update(self, online: nn.Module, momentum: float) -> None:
        """Nothing to do: the target is the online encoder."""
