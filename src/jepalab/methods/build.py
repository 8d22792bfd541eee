"""Methods from a configuration: encoder, masks, predictor and target of I-JEPA / V-JEPA,
the action-conditioned world model, and the data each trains on.

``build_experiment(cfg)`` seeds, then calls the builder registered for ``method.name``
(:data:`METHODS`), which returns an :class:`Experiment`: the method, its dataset and
collate function -- everything :class:`~jepalab.train.Trainer` needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from jepalab.config import Config
from jepalab.data.build import build_dataset, check_data_fits_encoder
from jepalab.data.trajectories import collate_trajectories
from jepalab.masks import MaskCollator, MaskGenerator
from jepalab.masks.build import build_mask_generator
from jepalab.methods.action import ActionConditioned
from jepalab.methods.base import Method
from jepalab.methods.ijepa import IJEPA
from jepalab.methods.regularizers import build_regularizer, regularizer_weight
from jepalab.methods.vjepa import VJEPA
from jepalab.models.build import (
    build_encoder,
    build_predictor,
    default_num_heads,
    predictor_positions,
)
from jepalab.models.pretrained import load_pretrained_encoder
from jepalab.models.registry import create_predictor
from jepalab.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Everything a training run needs, built from one config."""

    method: Method
    dataset: Any
    collate_fn: Callable


# method.name -> a builder ``(cfg) -> Experiment``; a new method registers one here
METHODS: Registry[Callable[[Config], Experiment]] = Registry("method", key="method.name")


def regularization(cfg: Config) -> dict[str, Any]:
    """The method's anti-collapse regulariser arguments from ``cfg.method`` (``regularizer``,
    ``regularizer_weight``, ``regularize_on``; see :mod:`jepalab.methods.regularizers`)."""
    m = cfg.method
    knobs = {
        key: getattr(m, key)
        for key in (
            "sigreg_slices",
            "sigreg_knots",
            "sigreg_t_max",
            "vicreg_std_target",
            "vicreg_variance_weight",
            "vicreg_covariance_weight",
        )
    }
    return dict(
        regularizer=build_regularizer(m.regularizer, seed=cfg.trainer.seed, **knobs),
        regularizer_weight=regularizer_weight(m.regularizer, m.regularizer_weight),
        regularize_on=m.regularize_on,
    )


MASKED_METHODS: dict[str, type[IJEPA]] = {"ijepa": IJEPA, "vjepa": VJEPA}


def build_masked_method(cfg: Config) -> tuple[IJEPA, MaskGenerator]:
    """I-JEPA and V-JEPA build the same way: encoder, masks, predictor, EMA (or online)
    target; returns the method and its mask generator. Does not seed (see
    :func:`build_initial_method`)."""
    if cfg.method.name not in MASKED_METHODS:
        raise ValueError(
            f"method.name={cfg.method.name!r} is not a masked JEPA ({list(MASKED_METHODS)})"
        )
    encoder = build_encoder(cfg.encoder)
    masks = build_mask_generator(cfg.mask, encoder.grid_size)
    dense = {}  # V-JEPA 2.1: a wider predictor with a context head
    if cfg.method.dense_levels > 1 or cfg.method.context_loss_weight > 0:
        dense = {
            "levels": cfg.method.dense_levels,
            "predict_context": cfg.method.context_loss_weight > 0,
        }
    predictor = build_predictor(
        cfg.predictor, encoder, cfg.encoder.attn_backend, masks.num_mask_tokens, **dense
    )
    method = MASKED_METHODS[cfg.method.name](
        encoder,
        predictor,
        ema=tuple(cfg.method.ema),
        loss=cfg.method.loss,
        loss_exp=cfg.method.loss_exp,
        target=cfg.method.target,
        target_layers=cfg.method.target_layers,
        dense_levels=cfg.method.dense_levels,
        context_loss_weight=cfg.method.context_loss_weight,
        context_loss_ramp=tuple(cfg.method.context_loss_ramp),
        context_loss_distance_weighting=cfg.method.context_loss_distance_weighting,
        **regularization(cfg),
    )
    return method, masks


def build_initial_method(cfg: Config) -> IJEPA:
    """The I-JEPA / V-JEPA method of ``cfg`` with the weights ``jepalab train`` starts from
    (seeded by ``trainer.seed``, as :func:`build_experiment`), without building the data."""
    torch.manual_seed(cfg.trainer.seed)
    return build_masked_method(cfg)[0]


@METHODS.register("ijepa")
@METHODS.register("vjepa")
def build_masked_experiment(cfg: Config) -> Experiment:
    """I-JEPA / V-JEPA: the method, its masks (the collator) and ``data``."""
    method, masks = build_masked_method(cfg)
    collate = MaskCollator(masks, cfg.trainer.seed)
    dataset = build_dataset(cfg.data)
    check_data_fits_encoder(cfg, dataset)
    return Experiment(method, dataset, collate)


def build_action_model(
    cfg: Config, action_dim: int, state_dim: int, load_encoder: bool = True
) -> ActionConditioned:
    """Encoder + action-conditioned predictor for ``cfg`` (``method=action``).

    With ``load_encoder`` and ``method.encoder_checkpoint`` set, the encoder is the
    checkpoint's, and ``cfg.encoder`` is overwritten with its configuration so that the
    run's stored config describes the encoder it really used. ``load_encoder=False`` builds
    ``cfg.encoder``'s shape only (the weights then come from an action-conditioned
    checkpoint, e.g. for planning).
    """
    m = cfg.method
    if load_encoder and m.encoder_checkpoint:
        encoder, enc_cfg = load_pretrained_encoder(m.encoder_checkpoint)
        for key, value in asdict(enc_cfg).items():
            setattr(cfg.encoder, key, value)
    else:
        if load_encoder and m.trainable_encoder_blocks == 0:
            log.warning(
                "method.encoder_checkpoint is not set: the action-conditioned predictor is "
                "trained on a randomly initialised frozen encoder"
            )
        encoder = build_encoder(cfg.encoder)
    p = cfg.predictor
    pooled = m.frame_pooling == "mean"  # one latent per frame (validated by the method)
    predictor = create_predictor(
        p.name,
        grid_size=(1, 1) if pooled else tuple(encoder.grid_size[-2:]),
        encoder_dim=encoder.embed_dim,
        action_dim=action_dim,
        state_dim=state_dim if m.use_states else 0,
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads or default_num_heads(encoder, p.embed_dim),
        drop_path_rate=p.drop_path_rate,
        attn_backend=cfg.encoder.attn_backend,
        # sincos unless predictor.pos_embed says otherwise (V-JEPA 2-AC: rope)
        **predictor_positions(p.pos_embed or "sincos", encoder),
    )
    return ActionConditioned(
        encoder,
        predictor,
        auto_steps=m.auto_steps,
        loss_exp=m.loss_exp,
        trainable_encoder_blocks=m.trainable_encoder_blocks,
        use_states=m.use_states,
        frame_pooling=m.frame_pooling,
        target_grad=m.target_grad,
        smoothness_weight=m.smoothness_weight,
        inverse_dynamics_weight=m.inverse_dynamics_weight,
        **regularization(cfg),
    )


@METHODS.register("action")
def build_action_experiment(cfg: Config) -> Experiment:
    """V-JEPA 2-AC: trajectory windows, a pretrained frozen encoder, the AC predictor."""
    dataset = build_dataset(cfg.data)
    for attr in ("action_dim", "state_dim"):
        if not hasattr(dataset, attr):
            raise ValueError(
                f"method=action needs a trajectory dataset (data.name=trajectories), got "
                f"data.name={cfg.data.name!r}"
            )
    if not cfg.method.encoder_checkpoint:  # a pretrained encoder brings its own channels
        check_data_fits_encoder(cfg, dataset)
    method = build_action_model(cfg, dataset.action_dim, dataset.state_dim)
    return Experiment(method, dataset, collate_trajectories)


def build_experiment(cfg: Config) -> Experiment:
    """Seed, then build method and data for ``cfg.method.name``."""
    builder = METHODS.get(cfg.method.name)  # an unknown name lists the registered ones
    torch.manual_seed(cfg.trainer.seed)  # model initialisation is part of the run's seed
    return builder(cfg)


__all__ = [
    "METHODS",
    "MASKED_METHODS",
    "Experiment",
    "build_action_experiment",
    "build_action_model",
    "build_experiment",
    "build_initial_method",
    "build_masked_experiment",
    "build_masked_method",
    "regularization",
]
