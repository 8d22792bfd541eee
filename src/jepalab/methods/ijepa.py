"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture"), Sec. 3 and Eq. 1.

Given images and multi-block masks: the target encoder (EMA of the context encoder) embeds the
whole image; its features are layer-normed (no affine) and read at the target positions. The
context encoder embeds only the visible patches; the predictor maps them, plus mask tokens at
the target positions, to predictions. The loss is the smooth-L1 distance between the two
(the released code uses ``smooth_l1_loss``; the paper writes L2), averaged over all target
tokens of all blocks.

The same objective, with 3-D masks and an L1 loss, is V-JEPA (:mod:`jepalab.methods.vjepa`):
:class:`IJEPA` is written for any number of contexts and mask configurations per sample.

V-JEPA 2.1's dense predictive loss (facebookresearch/vjepa2, ``app/vjepa_2_1/train.py``) is
an option: ``dense_levels`` encoder blocks supervised side by side, and the predictor's
predictions of the context tokens themselves added with weight ``context_loss_weight``
(:mod:`jepalab.methods.dense`).

Alternative anti-collapse mechanism (LeJEPA, Balestriero & LeCun 2025): ``target="online"``
takes the targets from the context encoder itself (no EMA), and a regulariser
(:mod:`jepalab.methods.regularizers`: SIGReg or VICReg's variance/covariance terms) of the
context encoder's output makes the loss ``(1 - λ) * prediction + λ * regulariser``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepalab.masks.collator import MaskedBatch
from jepalab.methods.base import Method, MethodOutput, MonitorInputs
from jepalab.methods.dense import context_distance_weights, ramped_weight
from jepalab.methods.regularizers import REGULARIZE_ON, pooled
from jepalab.models.ema import EMATarget, OnlineTarget, ema_momentum
from jepalab.models.vit import distillation_levels
from jepalab.ragged import Ragged
from jepalab.specs import records_arguments

LOSSES = ("smooth_l1", "l1", "mse")
TARGETS = ("ema", "online")


def _check_same_parameters(encoder: nn.Module, target: nn.Module) -> None:
    """A target module must be updatable towards ``encoder``: the same parameter shapes."""
    shapes = [tuple(p.shape) for p in encoder.parameters()]
    other = [tuple(p.shape) for p in target.parameters()]
    if shapes != other:
        raise ValueError(
            f"the target module ({type(target).__name__}, {len(other)} parameters) does not "
            f"have the encoder's parameters ({type(encoder).__name__}, {len(shapes)}); the EMA "
            "update needs the same architecture"
        )


def token_loss(prediction: Tensor, target: Tensor, loss: str, loss_exp: float = 1.0) -> Tensor:
    """Per-token loss ``(T,)``, averaged over feature channels.

    ``"l1"`` is V-JEPA's ``|p - t|^loss_exp / loss_exp`` (plain L1 for ``loss_exp=1``);
    ``"smooth_l1"`` is I-JEPA's release (beta 1); ``"mse"`` the squared error.
    """
    if loss == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, reduction="none").mean(-1)
    if loss == "mse":
        return (prediction - target).square().mean(-1)
    if loss == "l1":
        diff = (prediction - target).abs()
        return (diff if loss_exp == 1.0 else diff.pow(loss_exp) / loss_exp).mean(-1)
    raise ValueError(f"method.loss={loss!r} is not one of {LOSSES}")


@records_arguments
class IJEPA(Method):
    """The I-JEPA objective (and, with 3-D masks and its defaults, V-JEPA's).

    Args:
        encoder: context encoder, called as ``encoder(x)`` -> ``(B, N, D)`` and
            ``encoder(x, keep)`` -> ``(T, D)`` (see :class:`VisionTransformer`).
        predictor: called as ``predictor(features, context, targets, mask_ids)`` -> ``(Tt, D)``.
        ema: momentum at the start and at the end of training (I-JEPA: 0.996 -> 1.0).
        loss: one of :data:`LOSSES` (I-JEPA release: ``"smooth_l1"``).
        loss_exp: exponent of the ``"l1"`` loss.
        target: ``"ema"`` (the paper: an EMA copy of ``encoder``), ``"online"``: the context
            encoder itself, without gradient (:class:`~jepalab.models.ema.OnlineTarget`;
            ``ema`` is then unused), or a module: the EMA target itself (e.g. a pretrained
            or differently initialised encoder with ``encoder``'s parameters), updated
            towards the context encoder as the EMA copy would be.
        regularizer: ``regularizer(z, step) -> (value, metrics)`` on embeddings ``z (N, D)``
            (:func:`~jepalab.methods.regularizers.build_regularizer`), or ``None``.
        regularizer_weight: ``λ`` in ``(1 - λ) * prediction + λ * regularizer``.
        regularize_on: which embeddings of the context encoder are regularised:
            ``"pooled"`` (default; the mean of each context's tokens, ``(B, D)`` for I-JEPA:
            LeJEPA's one embedding per view, so ``N`` is the batch size as in the paper and
            its ``λ`` keeps its meaning) or ``"tokens"`` (every context token, ``(Tc, D)``:
            also rules out tokens collapsing *within* an image, but the Epps--Pulley
            statistic grows with ``N``, here ~100x larger, so lower ``λ``; and it costs
            ``Tc * slices * knots`` cosines and sines).
        target_layers: ``1``: targets are the target encoder's last layer (the paper);
            ``L > 1``: the mean of its last ``L`` blocks' layer-normed outputs (needs an
            encoder whose forward takes ``last_layers``, e.g. the ViT).
        dense_levels: V-JEPA 2.1's deep supervision: ``1`` (V-JEPA) or the number of
            encoder blocks (:func:`~jepalab.models.vit.distillation_levels`) whose
            layer-normed outputs are the targets and the predictor's input, side by side;
            the predictor must be built with ``levels=dense_levels``.
        context_loss_weight: ``λ`` of V-JEPA 2.1's context loss, ``loss_pred + λ_t *
            loss_context`` (0: off; V-JEPA 2.1: 0.5); the predictor must be built with
            ``predict_context=True``.
        context_loss_ramp: steps ``(start, end)`` over which ``λ_t`` rises from 0 to ``λ``
            (V-JEPA 2.1: 15000, 30000; ``(0, 0)``: constant).
        context_loss_distance_weighting: weight each context token's error by ``1 /
            sqrt(distance to the nearest predicted token)`` (V-JEPA 2.1's pretraining).
    """

    checkpoint_roles: ClassVar[Mapping[str, str]] = {
        "context_encoder": "encoder",
        "target_encoder.module": "target_encoder",
        "predictor": "predictor",
    }

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        ema: tuple[float, float] = (0.996, 1.0),
        loss: str = "smooth_l1",
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
        super().__init__()
        self.levels = _check_dense(
            encoder, predictor, dense_levels, context_loss_weight, context_loss_ramp
        )
        if self.levels is not None and target_layers > 1:
            raise ValueError("method.target_layers and method.dense_levels cannot be combined")
        if target_layers < 1:
            raise ValueError(f"method.target_layers must be >= 1, got {target_layers}")
        if target_layers > 1 and "last_layers" not in inspect.signature(encoder.forward).parameters:
            raise ValueError(
                f"method.target_layers={target_layers} needs an encoder that can average its "
                f"last layers (the ViT); {type(encoder).__name__} cannot"
            )
        if loss not in LOSSES:
            raise ValueError(f"method.loss={loss!r} is not one of {LOSSES}")
        if loss_exp <= 0:
            raise ValueError(f"method.loss_exp must be positive, got {loss_exp}")
        if isinstance(target, nn.Module):
            _check_same_parameters(encoder, target)
        elif target not in TARGETS:
            raise ValueError(f"method.target={target!r} is not one of {TARGETS}")
        if regularize_on not in REGULARIZE_ON:
            raise ValueError(
                f"method.regularize_on={regularize_on!r} is not one of {REGULARIZE_ON}"
            )
        self.context_encoder = encoder
        if isinstance(target, nn.Module):  # the given module is the target, not a copy
            self.target_encoder: nn.Module = EMATarget(target, copy=False)
        elif target == "ema":
            self.target_encoder = EMATarget(encoder)
        else:
            self.target_encoder = OnlineTarget(encoder)
        self.predictor = predictor
        self.ema = (float(ema[0]), float(ema[1]))
        self.loss_name, self.loss_exp = loss, float(loss_exp)
        self.target_kind = "ema" if isinstance(target, nn.Module) else target
        self.regularizer = regularizer
        self.regularizer_weight = float(regularizer_weight)
        self.regularize_on = regularize_on
        self.target_layers = int(target_layers)
        self.context_loss_weight = float(context_loss_weight)
        self.context_loss_ramp = (int(context_loss_ramp[0]), int(context_loss_ramp[1]))
        self.context_loss_distance_weighting = bool(context_loss_distance_weighting)

    @property
    def eval_encoder(self) -> nn.Module:
        return self.target_encoder.module  # I-JEPA and V-JEPA evaluate the target encoder

    @torch.no_grad()
    def target_features(self, images: Tensor) -> Tensor:
        """The target (EMA) encoder's features of the whole input, ``(B, N, D)`` (the mean of
        its last :attr:`target_layers` layers)."""
        if self.target_layers > 1:
            return self.target_encoder(images, last_layers=self.target_layers)
        if self.levels is not None:
            return self.target_encoder(images, levels=self.levels)
        return self.target_encoder(images)

    def encode_context(self, images: Tensor, keep: Ragged) -> Tensor:
        """The context encoder's features of the ``keep`` tokens, as the predictor reads them:
        with V-JEPA 2.1's deep supervision, the :attr:`levels` side by side."""
        levels = {} if self.levels is None else {"levels": self.levels}
        return self.context_encoder(images, keep=keep, **levels)

    def _normalize(self, features: Tensor) -> Tensor:
        """Layer norm without affine per token, per level when there are several (V-JEPA
        2.1 normalises each level's chunk of the concatenated target)."""
        d = features.shape[-1]
        if self.levels is None:
            return F.layer_norm(features, (d,))
        chunks = features.reshape(-1, len(self.levels), d // len(self.levels))
        return F.layer_norm(chunks, chunks.shape[-1:]).reshape(-1, d)

    def last_level(self, features: Tensor) -> Tensor:
        """The encoder's own output out of multi-level features (the last chunk); the
        features themselves without V-JEPA 2.1's deep supervision."""
        if self.levels is None:
            return features
        return features[..., -(features.shape[-1] // len(self.levels)) :]

    @torch.no_grad()
    def targets(self, batch: MaskedBatch, features: Tensor | None = None) -> Tensor:
        """Layer-normed target-encoder features at every target token, ``(Tt, D)``.

        ``features``: :meth:`target_features` of ``batch.images`` if already computed.
        """
        masks = batch.masks
        if features is None:
            features = self.target_features(batch.images)  # (B, N, D)
        b, n, d = features.shape
        index = masks.targets.flat_index(n, seqs_per_row=masks.num_targets)
        # LayerNorm is per token, so normalising only the gathered targets is identical.
        return self._normalize(features.reshape(b * n, d)[index])

    def loss(self, prediction: Tensor, target: Tensor, batch: MaskedBatch) -> Tensor:
        """Mean token loss within each mask configuration, then mean over configurations.

        With one configuration (I-JEPA) this is the mean over all target tokens; with
        several (V-JEPA) each configuration weighs the same whatever its number of tokens.

        The means are over the step's whole global batch: token losses are summed here and
        divided by the global batch's token counts (:attr:`MaskBatch.global_target_counts`)
        when the batch is one part of it (a process's share, an accumulation step), so the
        parts add up to the loss of the whole batch, exactly, even though samples keep
        different numbers of tokens.
        """
        per_token = token_loss(
            prediction, target.to(prediction.dtype), self.loss_name, self.loss_exp
        )
        masks = batch.masks
        counts = masks.global_target_counts
        if counts is None:
            counts = masks.target_counts()
        return _config_mean(per_token, masks.targets, masks.target_mask_ids(), counts)

    def context_loss(
        self, prediction: Tensor, features: Tensor, batch: MaskedBatch, metrics: dict
    ) -> Tensor:
        """V-JEPA 2.1's ``λ_t * loss_context``: the loss of the predictor's context-token
        predictions (``(Tp, W)``, :meth:`MaskedPredictor.forward_dense`) against the target
        encoder's features at those tokens, optionally distance-weighted, normalised as
        :meth:`loss` (per mask configuration, over the global batch)."""
        masks = batch.masks
        copies = masks.context_copies()
        b, n, d = features.shape
        index = copies.flat_index(n, seqs_per_row=masks.num_targets)
        target = self._normalize(features.reshape(b * n, d)[index])
        per_token = token_loss(
            prediction, target.to(prediction.dtype), self.loss_name, self.loss_exp
        )
        if self.context_loss_distance_weighting:
            grid = tuple(self.context_encoder.grid_size)
            weights = context_distance_weights(copies, masks.targets, grid)
            per_token = per_token * weights.to(per_token)
        counts = masks.global_context_counts
        if counts is None:
            counts = masks.context_counts()
        value = _config_mean(per_token, copies, masks.target_mask_ids(), counts)
        lam = ramped_weight(int(batch.step or 0), self.context_loss_weight, self.context_loss_ramp)
        metrics["context_loss"] = value.detach() / batch.fraction
        metrics["context_loss_weight"] = lam
        return lam * value

    def forward(self, batch: MaskedBatch) -> MethodOutput:
        masks = batch.masks
        if masks is None:
            raise ValueError(f"{type(self).__name__} needs masked batches; use a MaskCollator")
        features = self.target_features(batch.images)
        target = self.targets(batch, features)
        context = self.encode_context(batch.images, masks.context)
        inputs = (context, masks.context, masks.targets, masks.target_mask_ids())
        context_prediction = None
        if self.context_loss_weight > 0:
            prediction, context_prediction = self.predictor.forward_dense(*inputs)
        else:
            prediction = self.predictor(*inputs)
        loss = self.loss(prediction, target, batch)
        num_samples = batch.images.shape[0]
        metrics = {
            "context_tokens": masks.context.total / num_samples,
            "target_tokens": masks.targets.total / num_samples,
            # collapse monitors: per-dimension std over tokens (-> 0 when features collapse)
            "pred_std": prediction.detach().float().std(0).mean(),
            "target_std": target.float().std(0).mean(),
        }
        if context_prediction is not None:
            metrics["masked_loss"] = loss.detach() / batch.fraction
            loss = loss + self.context_loss(context_prediction, features, batch, metrics)
        if self.regularizer is not None:
            loss = self.regularize(loss, context, batch, metrics)
        return MethodOutput(
            loss,
            metrics,
            num_samples,
            {"context": masks.context.total, "target": masks.targets.total},
            self._monitor_inputs(features, prediction, target, batch),
            loss_is_share=True,
        )

    def regularize(
        self, prediction_loss: Tensor, context: Tensor, batch: MaskedBatch, metrics: dict
    ) -> Tensor:
        """``(1 - λ) * prediction_loss + λ * regularizer(z)`` with ``z`` the context tokens
        ``(Tc, D)`` or their mean per context (:attr:`regularize_on`); logs both terms.

        ``prediction_loss`` is this batch's share of the global batch's prediction loss; the
        regulariser's value is already that of all processes' samples together (it reduces
        its statistics over ranks), so its share is ``batch.fraction`` of it per process and
        accumulation step."""
        z = self.last_level(context)
        if self.regularize_on == "pooled":
            ctx = batch.masks.context
            z = pooled(context, ctx.seq_ids().to(context.device), ctx.num_seqs)
        value, terms = self.regularizer(z, int(batch.step or 0))
        metrics["prediction_loss"] = prediction_loss.detach() / batch.fraction
        metrics.update(terms)
        lam = self.regularizer_weight
        share = value.to(prediction_loss.dtype) * batch.fraction
        return (1.0 - lam) * prediction_loss + lam * share

    def _monitor_inputs(
        self, features: Tensor, prediction: Tensor, target: Tensor, batch: MaskedBatch
    ) -> MonitorInputs:
        """Pooled target features per sample, all target-encoder tokens, and predictions with
        their mask configuration (``mask0``, ``mask1``, ...: V-JEPA's short/long range)."""
        masks = batch.masks
        config_of_seq = masks.target_mask_ids()
        if config_of_seq is None:
            groups, names = None, ("mask0",)
        else:
            groups = config_of_seq.repeat_interleave(masks.targets.lengths)
            names = tuple(f"mask{i}" for i in range(masks.num_mask_configs))
        features = self.last_level(features)
        return MonitorInputs(
            embeddings=features.mean(dim=1),
            tokens=features,
            predictions=prediction.detach(),
            targets=target,
            groups=groups,
            group_names=names,
        )

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        if self.target_kind == "online":
            return {}
        momentum = ema_momentum(step, total_steps, *self.ema)
        self.target_encoder.update(self.context_encoder, momentum)
        return {"momentum": momentum}


def _config_mean(
    per_token: Tensor, seqs: Ragged, config_of_seq: Tensor | None, counts: Tensor
) -> Tensor:
    """Token losses summed per mask configuration, divided by that configuration's (global)
    token count, then averaged over configurations."""
    if config_of_seq is None:
        sums = per_token.sum().reshape(1)
    else:
        config = config_of_seq.to(per_token.device).repeat_interleave(
            seqs.lengths.to(per_token.device)
        )
        sums = per_token.new_zeros(counts.numel()).index_add_(0, config, per_token)
    counts = counts.to(device=per_token.device, dtype=per_token.dtype).clamp_min(1)
    return (sums / counts).mean()


def _check_dense(
    encoder: nn.Module,
    predictor: nn.Module,
    dense_levels: int,
    context_loss_weight: float,
    context_loss_ramp: tuple[int, int],
) -> list[int] | None:
    """The encoder blocks of V-JEPA 2.1's deep supervision (``None``: one level), after
    checking that the encoder and predictor were built for the options."""
    ramped_weight(0, context_loss_weight, context_loss_ramp)  # checks the ramp
    if context_loss_weight < 0:
        raise ValueError(f"method.context_loss_weight must be >= 0, got {context_loss_weight}")
    if context_loss_weight > 0 and getattr(predictor, "predictor_proj_context", None) is None:
        raise ValueError(
            "method.context_loss_weight > 0 needs a predictor with a context head "
            "(predict_context=True)"
        )
    if getattr(predictor, "levels", 1) != dense_levels:
        raise ValueError(
            f"method.dense_levels={dense_levels} but the predictor was built for "
            f"{getattr(predictor, 'levels', 1)} level(s)"
        )
    if dense_levels == 1:
        return None
    if "levels" not in inspect.signature(encoder.forward).parameters:
        raise ValueError(
            f"method.dense_levels={dense_levels} needs an encoder that returns several blocks' "
            f"outputs (the ViT); {type(encoder).__name__} cannot"
        )
    return distillation_levels(len(encoder.blocks), dense_levels)
