"""Name -> constructor registries for encoders and predictors (timm's ``register_model`` idea).

>>> from jepalab.models import create_encoder, list_encoders
>>> enc = create_encoder("vit_tiny_patch16", img_size=224)

With weights from a checkpoint (official or jepalab): :func:`jepalab.create_encoder`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from jepalab.registry import Registry
from jepalab.specs import set_registry_name

ENCODERS: Registry = Registry("encoder", key="encoder.name")
PREDICTORS: Registry = Registry("predictor", key="predictor.name")

register_encoder = ENCODERS.register
register_predictor = PREDICTORS.register


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered encoder, e.g. ``create_encoder("vit_small_patch16", img_size=224)``;
    keyword arguments override its defaults. The model records the name it was created
    under (:mod:`jepalab.specs`), so a checkpoint can say which registered model it holds."""
    model = ENCODERS.create(name, **kwargs)
    set_registry_name(model, name)
    return model


def create_predictor(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered predictor (see :func:`create_encoder`)."""
    model = PREDICTORS.create(name, **kwargs)
    set_registry_name(model, name)
    return model


def list_encoders(pattern: str | None = None) -> list[str]:
    """Names of the registered encoders (``pattern`` like ``"vit_*_patch14"``)."""
    return ENCODERS.names(pattern)


def list_predictors(pattern: str | None = None) -> list[str]:
    """Names of the registered predictors."""
    return PREDICTORS.names(pattern)


__all__ = [
    "ENCODERS",
    "PREDICTORS",
    "create_encoder",
    "create_predictor",
    "list_encoders",
    "list_predictors",
    "register_encoder",
    "register_predictor",
]
