"""V-JEPA (Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual
Representations from Video"), Sec. 3, Eq. 1-2; V-JEPA 2 (Assran et al. 2025), Sec. 2.

The I-JEPA objective carried over to clips: a tubelet ViT, 3-D multi-block masks with several
mask configurations per batch (each predicted from its own context with its own mask token),
and an L1 loss ``|prediction - LN(target)|^p / p`` (``loss_exp`` p = 1) averaged over the
target tokens of each configuration and then over configurations. The target encoder is an
EMA of the context encoder: 0.998 -> 1.0 in V-JEPA, a constant 0.99925 in V-JEPA 2 (``ema``
with equal endpoints).

Everything but the defaults is shared with :class:`~jepalab.methods.ijepa.IJEPA`, and both
train in the same :class:`~jepalab.train.Trainer`.
"""

from __future__ import annotations

from torch import nn

from jepalab.methods.ijepa import IJEPA
from jepalab.specs import records_arguments


@records_arguments
class VJEPA(IJEPA):
    """The V-JEPA objective.

    Args:
        encoder: video context encoder (``VisionTransformer`` with ``num_frames > 1``).
        predictor: masked predictor with one mask token per mask configuration.
        ema: momentum schedule endpoints (V-JEPA: 0.998 -> 1.0; V-JEPA 2: constant).
        loss: ``"l1"`` (V-JEPA), or any of :data:`~jepalab.methods.ijepa.LOSSES`.
        loss_exp: exponent ``p`` of the L1 loss (V-JEPA ``loss_exp``: 1).
        target, regularizer, regularizer_weight, regularize_on: the alternative
            anti-collapse mechanism, as in :class:`~jepalab.methods.ijepa.IJEPA`.
        target_layers: average of the target encoder's last layers, as in ``IJEPA``.
        dense_levels, context_loss_weight, context_loss_ramp, context_loss_distance_weighting:
            V-JEPA 2.1's dense predictive loss, as in ``IJEPA`` (off by default).
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        ema: tuple[float, float] = (0.998, 1.0),
        loss: str = "l1",
        loss_exp: float = 1.0,
        target: str | nn.Module = "ema",
        regularizer: nn.Module | None = None,
        regularizer_weight: float = 0.0,
        regularize_on: str = "pooled",
        target_layers: int = 1,
        dense_levels: int = 1,
        context_loss_weight: float = 0.0,
        context_loss_ramp: tuple[int, int] = (0, 0),
        context_loss_distance_weighting: bool = False,
    ) -> None:
        super().__init__(
            encoder,
            predictor,
            ema=ema,
            loss=loss,
            loss_exp=loss_exp,
            target=target,
            regularizer=regularizer,
            regularizer_weight=regularizer_weight,
            regularize_on=regularize_on,
            target_layers=target_layers,
            dense_levels=dense_levels,
            context_loss_weight=context_loss_weight,
            context_loss_ramp=context_loss_ramp,
            context_loss_distance_weighting=context_loss_distance_weighting,
        )
