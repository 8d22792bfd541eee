"""What a method is: ``batch -> loss + metrics``. The Trainer owns everything else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn


@dataclass
class MonitorInputs:
    """What a method hands to the collapse monitors (:mod:`jepalab.train.collapse`): detached
    tensors it computed anyway, so that filling it costs nothing.

    Attributes:
        embeddings: ``(n, D)`` one embedding per sample (e.g. average-pooled target features).
        tokens: ``(T, D)`` target-encoder token features (before the loss's layer norm), or
            ``None``.
        predictions: ``(P, D')`` predictor outputs, or ``None``.
        targets: ``(P, D')`` what they were trained to match.
        groups: ``(P,)`` group index of every prediction (e.g. its mask configuration).
        group_names: name of each group index.
    """

    embeddings: Tensor
    tokens: Tensor | None = None
    predictions: Tensor | None = None
    targets: Tensor | None = None
    groups: Tensor | None = None
    group_names: Sequence[str] = ()


@dataclass
class MethodOutput:
    """The result of one forward pass of a method.

    Attributes:
        loss: scalar to minimise.
        metrics: detached scalars to log (floats or 0-d tensors).
        num_samples: samples in the batch (for throughput).
        num_tokens: token counts by kind, e.g. ``{"context": 1520, "target": 540}``.
        monitor: embeddings for the collapse monitors, or ``None``.
        loss_is_share: how ``loss`` relates to the loss of the step's global batch when the
            batch is one of its parts (processes x accumulation steps, each a fraction ``f``
            of it). ``False``: ``loss`` is a mean over this batch's samples; the Trainer
            weighs it by ``f``, which is exact when every sample weighs the same. ``True``:
            ``loss`` is already this part's additive share (the parts sum to the global
            loss), e.g. token sums divided by the global batch's token counts
            (:meth:`jepalab.methods.ijepa.IJEPA.loss`). With one part the two agree.
    """

    loss: Tensor
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    num_samples: int = 0
    num_tokens: dict[str, int] = field(default_factory=dict)
    monitor: MonitorInputs | None = None
    loss_is_share: bool = False


class Method(nn.Module):
    """Base class of training methods (I-JEPA, V-JEPA, action-conditioned, ...).

    Subclasses implement :meth:`forward` and may override :meth:`after_optimizer_step` (e.g. an
    EMA update) and :attr:`eval_encoder` (the encoder that evaluations should use).

    :attr:`checkpoint_roles` says which submodule plays which part, ``{module path: role}``
    with roles ``encoder``, ``target_encoder`` and ``predictor``: the Trainer writes it into
    every checkpoint, and ``create_encoder(checkpoint=...)``, ``load_run`` and
    ``jepalab convert`` read the weights through it, so a new method with its own attribute
    names needs nothing else to be loaded and exported.
    """

    checkpoint_roles: ClassVar[Mapping[str, str]] = {}

    def forward(self, batch) -> MethodOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called by the Trainer after each optimiser step; returns scalars to log."""
        return {}

    @property
    def eval_encoder(self) -> nn.Module:
        """The encoder whose frozen features evaluations probe."""
        raise NotImplementedError
