"""Action-conditioned world-model training, V-JEPA 2-AC (Assran et al. 2025, "V-JEPA 2",
Sec. 3.1, Eq. 2-4).

A pretrained encoder embeds every frame of a trajectory window on its own (a video encoder
sees the frame repeated into one tubelet, as in the release); the features are layer-normed
(no affine) and serve both as the predictor's inputs and as its targets. The predictor
(:class:`~jepalab.models.ActionConditionedPredictor`) is trained with

* **teacher forcing** (Eq. 2): from frames ``0 .. T-2`` with their actions (and states),
  predict frames ``1 .. T-1``; L1 over all predicted tokens;
* **rollout** (Eq. 3): from frame 0 only, predict ``auto_steps`` frames autoregressively,
  each prediction fed back as the next input; L1 against frames ``1 .. auto_steps``.

``loss = teacher_forcing + rollout`` (each ``mean |p - z|^loss_exp / loss_exp``). The encoder
is frozen by default (the paper); ``trainable_encoder_blocks`` unfreezes the last ``k`` blocks
(and the final norm), or all with ``-1`` — targets are then computed without gradient, so
nothing but the predictor pulls the features together (no EMA guards against collapse; watch
the logged ``target_std``, or add a regulariser of the features: ``method.regularizer=sigreg``
makes the loss ``(1 - λ) * (teacher_forcing + rollout) + λ * SIGReg``, see
:mod:`jepalab.methods.regularizers`).

**End to end** (LeWorldModel, Maes et al. 2026; PLDM, Sobal et al. 2025): with
``frame_pooling="mean"`` every frame is one latent (the mean of its tokens, batch-standardised),
and with ``target_grad=True`` the encoder is trained from scratch through inputs *and* targets,
the regulariser alone keeping the latents spread. Planning needs an energy that falls steadily
as the agent nears the goal; one pooled latent per frame shaped by the dynamics gives it, where
the patch features of a frozen image encoder change only when the agent's patch changes
(``docs/planning.md``). PLDM's temporal-smoothness term (``smoothness_weight``) is what makes
that slope reach across the arena, and its inverse-dynamics term (``inverse_dynamics_weight``)
makes the latent carry the displacement; both are added to the prediction loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepalab.methods.base import Method, MethodOutput, MonitorInputs
from jepalab.methods.regularizers import REGULARIZE_ON
from jepalab.specs import records_arguments

FRAME_POOLING = ("none", "mean")


def encode_frames(encoder: nn.Module, frames: Tensor, pool: bool = False) -> Tensor:
    """Features of every frame, each encoded on its own.

    Args:
        encoder: an image encoder (``(B, C, H, W) -> (B, N, D)``), or a video encoder with
            ``num_frames == tubelet_size`` (the frame is repeated into one tubelet).
        frames: ``(B, T, C, H, W)``.
        pool: ``False``: every patch token, layer-normed without affine (V-JEPA 2-AC);
            ``True``: one latent per frame (``N = 1``), the plain mean of the encoder's output
            tokens, which :class:`ActionConditioned` then batch-standardises (a per-latent
            layer norm would pin its length, most of which is the constant image of the
            walls: SIGReg then stayed at its collapsed value).

    Returns:
        ``(B, T, N, D)``.
    """
    b, t = frames.shape[:2]
    x = frames.reshape(b * t, *frames.shape[2:])
    num_frames = getattr(encoder, "num_frames", 1)
    if num_frames > 1:
        if num_frames != encoder.tubelet_size:
            raise ValueError(
                f"a video encoder embeds single frames as one tubelet: it needs num_frames == "
                f"tubelet_size, got {num_frames} and {encoder.tubelet_size}"
            )
        x = x[:, :, None].expand(-1, -1, num_frames, -1, -1)
    features = encoder(x)
    if pool:
        return features.mean(dim=1, keepdim=True).reshape(b, t, 1, features.shape[-1])
    return F.layer_norm(features, features.shape[-1:]).reshape(b, t, *features.shape[1:])


def set_trainable_blocks(encoder: nn.Module, blocks: int) -> None:
    """Freeze ``encoder`` except its last ``blocks`` transformer blocks and final norm.

    ``0`` freezes everything (V-JEPA 2-AC), ``-1`` trains everything.
    """
    if blocks < -1:
        raise ValueError(f"method.trainable_encoder_blocks must be >= -1, got {blocks}")
    train_all = blocks == -1
    for p in encoder.parameters():
        p.requires_grad_(train_all)
    if blocks > 0:
        encoder_blocks = getattr(encoder, "blocks", None)
        if encoder_blocks is None or blocks > len(encoder_blocks):
            raise ValueError(
                f"method.trainable_encoder_blocks={blocks} but the encoder has "
                f"{0 if encoder_blocks is None else len(encoder_blocks)} blocks"
            )
        for module in (*encoder_blocks[-blocks:], getattr(encoder, "norm", nn.Identity())):
            for p in module.parameters():
                p.requires_grad_(True)


@records_arguments
class ActionConditioned(Method):
    """The V-JEPA 2-AC objective on :class:`~jepalab.data.trajectories.TrajectoryBatch` es.

    Args:
        encoder: pretrained frame encoder (see :func:`encode_frames`).
        predictor: :class:`~jepalab.models.ActionConditionedPredictor`.
        auto_steps: rollout length of the rollout loss (V-JEPA 2-AC: 2); ``<= T - 1``.
        loss_exp: exponent of the L1 loss (1: plain L1).
        trainable_encoder_blocks: ``0`` frozen (default), ``k`` last blocks, ``-1`` all.
        use_states: feed the batch's proprioceptive states (the predictor needs
            ``state_dim > 0``).
        regularizer: ``regularizer(z, step) -> (value, metrics)`` on the encoder's
            layer-normed frame features (:mod:`jepalab.methods.regularizers`), or ``None``;
            needs a trainable encoder.
        regularizer_weight: ``λ`` in ``(1 - λ) * prediction + λ * regularizer``.
        regularize_on: ``"pooled"`` (one mean per frame, default) or ``"tokens"`` (every
            patch token of every frame).
        frame_pooling: ``"none"`` (every patch token, V-JEPA 2-AC) or ``"mean"`` (one latent
            per frame, as PLDM / LeWorldModel plan with; the predictor then has
            ``grid_size=(1, 1)``): the mean of the frame's tokens, standardised by a
            ``BatchNorm1d`` (batch statistics in training, running ones at evaluation), as
            LeWorldModel's projector does.
        target_grad: let the targets carry gradient into a trainable encoder (end-to-end
            training, LeWorldModel; Maes et al. 2026); needs a regulariser against collapse.
        smoothness_weight: weight of PLDM's temporal-smoothness term (Sobal et al. 2025):
            the mean squared step ``|z_{t+1} - z_t|^2`` between consecutive frame features,
            which pulls states one action apart close together, so that latent
            distance grows with the distance travelled. Needs a trainable encoder.
        inverse_dynamics_weight: weight of PLDM's inverse-dynamics term: an MLP reads
            ``[z_t, z_{t+1}]`` and predicts the action ``a_t`` between them; the squared error
            is divided by the batch's mean squared action (1 = predicting zero). It makes
            the features carry what the action changed. Needs a trainable encoder.
    """

    checkpoint_roles: ClassVar[Mapping[str, str]] = {
        "encoder": "encoder",
        "predictor": "predictor",
    }

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        auto_steps: int = 2,
        loss_exp: float = 1.0,
        trainable_encoder_blocks: int = 0,
        use_states: bool = False,
        regularizer: nn.Module | None = None,
        regularizer_weight: float = 0.0,
        regularize_on: str = "pooled",
        frame_pooling: str = "none",
        target_grad: bool = False,
        smoothness_weight: float = 0.0,
        inverse_dynamics_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if auto_steps < 1:
            raise ValueError(f"method.auto_steps must be >= 1, got {auto_steps}")
        if loss_exp <= 0:
            raise ValueError(f"method.loss_exp must be positive, got {loss_exp}")
        if use_states != (getattr(predictor, "state_dim", 0) > 0):
            raise ValueError(
                f"method.use_states={use_states} but the predictor's state_dim is "
                f"{getattr(predictor, 'state_dim', 0)}"
            )
        self.encoder = encoder
        self.predictor = predictor
        self.auto_steps, self.loss_exp = int(auto_steps), float(loss_exp)
        self.use_states = use_states
        set_trainable_blocks(encoder, trainable_encoder_blocks)
        if regularizer is not None and self.encoder_frozen:
            raise ValueError(
                "method.regularizer regularises the encoder's features, but the encoder is "
                "frozen (method.trainable_encoder_blocks=0): set trainable_encoder_blocks to "
                "k > 0 or -1, or method.regularizer=none"
            )
        if regularize_on not in REGULARIZE_ON:
            raise ValueError(
                f"method.regularize_on={regularize_on!r} is not one of {REGULARIZE_ON}"
            )
        self.regularizer = regularizer
        self.regularizer_weight, self.regularize_on = float(regularizer_weight), regularize_on
        if frame_pooling not in FRAME_POOLING:
            raise ValueError(
                f"method.frame_pooling={frame_pooling!r} is not one of {FRAME_POOLING}"
            )
        if frame_pooling == "mean" and getattr(predictor, "num_patches", 1) != 1:
            raise ValueError(
                "method.frame_pooling=mean gives one token per frame, but the predictor expects "
                f"{predictor.num_patches}: build it with grid_size=(1, 1)"
            )
        if target_grad and (self.encoder_frozen or regularizer is None):
            raise ValueError(
                "method.target_grad=true trains the encoder through the targets too, which "
                "collapses without a regulariser: it needs trainable_encoder_blocks != 0 and "
                "method.regularizer=sigreg|vicreg"
            )
        self.frame_pooling, self.target_grad = frame_pooling, bool(target_grad)
        for key, weight in (
            ("smoothness_weight", smoothness_weight),
            ("inverse_dynamics_weight", inverse_dynamics_weight),
        ):
            if weight < 0:
                raise ValueError(f"method.{key} must be >= 0, got {weight}")
            if weight > 0 and self.encoder_frozen:
                raise ValueError(
                    f"method.{key}={weight} shapes the encoder's features, but the encoder is "
                    "frozen: set method.trainable_encoder_blocks to k > 0 or -1"
                )
        self.smoothness_weight = float(smoothness_weight)
        self.inverse_dynamics_weight = float(inverse_dynamics_weight)
        self.inverse_dynamics = None
        if inverse_dynamics_weight > 0:
            d = encoder.embed_dim
            self.inverse_dynamics = nn.Sequential(
                nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, predictor.action_dim)
            )
        # The pooled latent is mostly the constant image of the static scene (walls), and the
        # agent moves one token of many: a batch standardisation removes the constant and
        # gives every dimension unit spread from the first step, so the regulariser shapes the
        # distribution instead of slowly growing the scale (without it SIGReg barely moved
        # from its collapsed value in 100s of steps).
        self.latent_norm = nn.BatchNorm1d(encoder.embed_dim) if frame_pooling == "mean" else None

    @property
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    @property
    def eval_encoder(self) -> nn.Module:
        return self.encoder

    def train(self, mode: bool = True) -> ActionConditioned:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()  # a frozen encoder keeps eval behaviour (no drop-path)
        return self

    def encode(self, frames: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` frames -> ``(B, T, N, D)``: layer-normed patch features, or
        with ``frame_pooling="mean"`` one batch-standardised latent per frame (``N = 1``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            z = encode_frames(self.encoder, frames, pool=self.frame_pooling == "mean")
        if self.latent_norm is not None:
            z = self.latent_norm(z.flatten(0, 2)).view(z.shape)
        return z

    def _l1(self, prediction: Tensor, target: Tensor) -> Tensor:
        diff = (prediction - target.to(prediction.dtype)).abs()
        return (diff if self.loss_exp == 1.0 else diff.pow(self.loss_exp) / self.loss_exp).mean()

    def forward(self, batch) -> MethodOutput:
        frames, actions = batch.frames, batch.actions
        steps = frames.shape[1]
        if steps < 2 or actions.shape[1] != steps - 1:
            raise ValueError(
                f"a window needs >= 2 frames and one action between consecutive frames; got "
                f"{steps} frames and {actions.shape[1]} actions"
            )
        if self.auto_steps > steps - 1:
            raise ValueError(
                f"method.auto_steps={self.auto_steps} needs windows of at least "
                f"{self.auto_steps + 1} frames (data has {steps}); raise data num_frames"
            )
        states = batch.states if self.use_states else None
        features = self.encode(frames)
        observed = features.detach()  # for the metrics and monitors
        # without target_grad a trainable encoder learns through the predictor's inputs only
        target = features if self.target_grad else observed
        teacher = self.predictor(
            features[:, :-1], actions, None if states is None else states[:, :-1]
        )
        loss_tf = self._l1(teacher, target[:, 1:])
        k = self.auto_steps
        rolled = self.predictor.rollout(
            features[:, 0], actions[:, :k], None if states is None else states[:, :k]
        )
        loss_rollout = self._l1(rolled, target[:, 1 : k + 1])
        num_samples = frames.shape[0]
        metrics = {
            "loss_teacher_forcing": loss_tf.detach(),
            "loss_rollout": loss_rollout.detach(),
            # features barely changing between frames make prediction trivial: compare the
            # loss with this copy-the-last-frame baseline
            "copy_baseline": self._l1(observed[:, :-1], observed[:, 1:]),
            "target_std": observed.float().std(dim=(0, 1, 2)).mean(),
        }
        d = observed.shape[-1]
        predictions = torch.cat([teacher.detach().reshape(-1, d), rolled.detach().reshape(-1, d)])
        targets = torch.cat([observed[:, 1:].reshape(-1, d), observed[:, 1 : k + 1].reshape(-1, d)])
        groups = torch.cat(
            [
                torch.zeros(teacher[..., 0].numel(), dtype=torch.long, device=observed.device),
                torch.ones(rolled[..., 0].numel(), dtype=torch.long, device=observed.device),
            ]
        )
        monitor = MonitorInputs(
            embeddings=observed.mean(dim=2).reshape(-1, d),  # one per frame, pooled
            tokens=observed,
            predictions=predictions,
            targets=targets,
            groups=groups,
            group_names=("teacher_forcing", "rollout"),
        )
        loss = loss_tf + loss_rollout
        prediction_loss = loss.detach()  # logged without the PLDM terms below
        if self.smoothness_weight > 0:
            smoothness = (features[:, 1:] - features[:, :-1]).pow(2).mean()
            metrics["smoothness"] = smoothness.detach()
            loss = loss + self.smoothness_weight * smoothness
        if self.inverse_dynamics is not None:
            pooled = features.mean(dim=2)  # (B, T, D): one vector per frame
            guess = self.inverse_dynamics(torch.cat([pooled[:, :-1], pooled[:, 1:]], dim=-1))
            scale = actions.float().pow(2).mean().clamp_min(1e-12)
            inverse = (guess - actions.to(guess.dtype)).pow(2).mean() / scale
            metrics["inverse_dynamics"] = inverse.detach()
            loss = loss + self.inverse_dynamics_weight * inverse
        if self.regularizer is not None:
            z = features.mean(dim=2) if self.regularize_on == "pooled" else features
            value, terms = self.regularizer(z.reshape(-1, d), int(batch.step or 0))
            metrics.update(terms, prediction_loss=prediction_loss)
            lam = self.regularizer_weight
            loss = (1.0 - lam) * loss + lam * value.to(loss.dtype)
        return MethodOutput(loss, metrics, num_samples, monitor=monitor)
