"""Encoders, predictors and the EMA target, built by name through the registries."""

from jepalab.models import action_predictor as _action_predictor  # noqa: F401  (registers)
from jepalab.models import convnext as _convnext  # noqa: F401  (registers encoders)
from jepalab.models import predictor as _predictor  # noqa: F401  (registers predictors)
from jepalab.models import vit as _vit  # noqa: F401  (registers encoders)
from jepalab.models.action_predictor import ActionConditionedPredictor
from jepalab.models.convnext import ConvNeXt
from jepalab.models.ema import EMATarget, OnlineTarget, ema_momentum
from jepalab.models.encoder import Encoder, repeated_blocks
from jepalab.models.predictor import MaskedPredictor
from jepalab.models.registry import (
    ENCODERS,
    PREDICTORS,
    create_encoder,
    create_predictor,
    list_encoders,
    list_predictors,
    register_encoder,
    register_predictor,
)
from jepalab.models.vit import VisionTransformer

__all__ = [
    "ENCODERS",
    "PREDICTORS",
    "ActionConditionedPredictor",
    "ConvNeXt",
    "EMATarget",
    "Encoder",
    "MaskedPredictor",
    "OnlineTarget",
    "VisionTransformer",
    "create_encoder",
    "create_predictor",
    "ema_momentum",
    "list_encoders",
    "list_predictors",
    "register_encoder",
    "register_predictor",
    "repeated_blocks",
]
