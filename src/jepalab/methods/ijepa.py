"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture"), Sec. 3 and Eq. 1.

Given images and multi-block masks: the target encoder (EMA of the context encoder) embeds the
whole image; its features are layer-normed (no affine) and read at the target positions. The
context encoder embeds only the visible patches; the predictor maps them, plus mask tokens at
the target positions, to predictions. The loss is the smooth-L1 distance between the two
(the released code uses ``smooth_l1_loss``; the paper writes L2), averaged over all target
tokens of all blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jepalab.masks.collator import MaskedBatch
from jepalab.methods.base import Method, MethodOutput
from jepalab.models.ema import EMATarget, ema_momentum

LOSSES = {
    "smooth_l1": F.smooth_l1_loss,
    "l1": F.l1_loss,
    "mse": F.mse_loss,
}


class IJEPA(Method):
    """The I-JEPA objective.

    Args:
        encoder: context encoder, called as ``encoder(images)`` -> ``(B, N, D)`` and
            ``encoder(images, keep)`` -> ``(T, D)`` (see :class:`VisionTransformer`).
        predictor: called as ``predictor(features, context, targets)`` -> ``(Tt, D)``.
        ema: momentum at the start and at the end of training (I-JEPA: 0.996 -> 1.0).
        loss: ``"smooth_l1"`` (I-JEPA release), ``"l1"`` or ``"mse"``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        ema: tuple[float, float] = (0.996, 1.0),
        loss: str = "smooth_l1",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"method.loss={loss!r} is not one of {sorted(LOSSES)}")
        self.context_encoder = encoder
        self.target_encoder = EMATarget(encoder)
        self.predictor = predictor
        self.ema = (float(ema[0]), float(ema[1]))
        self.loss_name = loss

    @property
    def eval_encoder(self) -> nn.Module:
        return self.target_encoder.module  # I-JEPA evaluates the target encoder

    @torch.no_grad()
    def targets(self, batch: MaskedBatch):
        """Layer-normed target-encoder features at every target token, ``(Tt, D)``."""
        masks = batch.masks
        features = self.target_encoder(batch.images)  # (B, N, D)
        b, n, d = features.shape
        index = masks.targets.flat_index(n, seqs_per_row=masks.num_targets)
        # LayerNorm is per token, so normalising only the gathered targets is identical.
        return F.layer_norm(features.reshape(b * n, d)[index], (d,))

    def forward(self, batch: MaskedBatch) -> MethodOutput:
        masks = batch.masks
        if masks is None:
            raise ValueError("I-JEPA needs masked batches; use a MaskCollator")
        target = self.targets(batch)
        context = self.context_encoder(batch.images, keep=masks.context)
        prediction = self.predictor(context, masks.context, masks.targets)
        loss = LOSSES[self.loss_name](prediction, target.to(prediction.dtype))
        num_samples = batch.images.shape[0]
        metrics = {
            "context_tokens": masks.context.total / num_samples,
            "target_tokens": masks.targets.total / num_samples,
            # collapse monitors: per-dimension std over tokens (-> 0 when features collapse)
            "pred_std": prediction.detach().float().std(0).mean(),
            "target_std": target.float().std(0).mean(),
        }
        return MethodOutput(
            loss,
            metrics,
            num_samples,
            {"context": masks.context.total, "target": masks.targets.total},
        )

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        momentum = ema_momentum(step, total_steps, *self.ema)
        self.target_encoder.update(self.context_encoder, momentum)
        return {"momentum": momentum}
