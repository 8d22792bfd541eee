"""Name -> constructor registries for encoders and predictors (timm's ``register_model`` idea).

>>> from jepalab.models import create_encoder, list_encoders
>>> enc = create_encoder("vit_tiny_patch16", img_size=224)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from jepalab.specs import set_registry_name

F = TypeVar("F", bound=Callable[..., nn.Module])


class Registry:
    """A named collection of model constructors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, Callable[..., nn.Module]] = {}

    def register(self, fn: F) -> F:
        """Decorator: register ``fn`` under its ``__name__``."""
        if fn.__name__ in self._fns:
            raise ValueError(f"{self.kind} {fn.__name__!r} is already registered")
        self._fns[fn.__name__] = fn
        return fn

    def create(self, name: str, **kwargs: Any) -> nn.Module:
        """Build the model registered as ``name``; keyword arguments override its defaults."""
        if name not in self._fns:
            close = fnmatch.filter(self._fns, f"*{name.split('_')[0]}*")
            hint = f" Similar: {close}." if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}.{hint} Available: {sorted(self._fns)}")
        model = self._fns[name](**kwargs)
        set_registry_name(model, name)  # the checkpoint can say which registered model it is
        return model

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, optionally filtered by a shell-style ``pattern``."""
        names = sorted(self._fns)
        return fnmatch.filter(names, pattern) if pattern else names

    def __contains__(self, name: str) -> bool:
        return name in self._fns


ENCODERS = Registry("encoder")
PREDICTORS = Registry("predictor")

register_encoder = ENCODERS.register
register_predictor = PREDICTORS.register


def create_encoder(
    name: str,
    checkpoint: str | Path | None = None,
    checkpoint_key: str = "target_encoder",
    checkpoint_format: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered encoder, e.g. ``create_encoder("vit_small_patch16", img_size=224)``.

    With ``checkpoint`` (a local official I-JEPA / V-JEPA / V-JEPA 2 file or a jepalab one),
    its layout is detected (or given as ``checkpoint_format``), the options it implies are
    defaulted (V-JEPA 2: ``pos_embed="rope", rope_reference_layout=True``) and the weights
    under ``checkpoint_key`` are loaded strictly (:func:`jepalab.interop.load_encoder`).
    """
    if checkpoint is None:
        return ENCODERS.create(name, **kwargs)
    from jepalab.interop import load_encoder

    def load(model: nn.Module, ckpt: dict, fmt: str) -> None:
        load_encoder(model, ckpt, checkpoint_key, fmt, label=str(checkpoint))

    return _create_from_checkpoint(ENCODERS, name, checkpoint, checkpoint_format, kwargs, load)


def list_encoders(pattern: str | None = None) -> list[str]:
    """Names of the registered encoders (``pattern`` like ``"vit_*_patch14"``)."""
    return ENCODERS.names(pattern)


def create_predictor(
    name: str,
    checkpoint: str | Path | None = None,
    checkpoint_format: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered predictor; with ``checkpoint``, load its ``predictor`` strictly
    (layout detected as for :func:`create_encoder`)."""
    if checkpoint is None:
        return PREDICTORS.create(name, **kwargs)
    from jepalab.interop import load_predictor

    def load(model: nn.Module, ckpt: dict, fmt: str) -> None:
        load_predictor(model, ckpt, fmt, label=str(checkpoint))

    return _create_from_checkpoint(PREDICTORS, name, checkpoint, checkpoint_format, kwargs, load)


def _create_from_checkpoint(
    registry: Registry,
    name: str,
    checkpoint: str | Path,
    checkpoint_format: str | None,
    kwargs: dict[str, Any],
    load: Callable[[nn.Module, dict, str], None],
) -> nn.Module:
    """Read ``checkpoint``, build ``name`` with the options its format implies (``kwargs``
    win), and ``load`` its weights into the model strictly."""
    from jepalab.interop import implied_kwargs, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    rope = kwargs.get("pos_embed") == "rope" or None
    fmt, implied = implied_kwargs(ckpt, registry.kind, checkpoint_format, rope)
    model = registry.create(name, **{**implied, **kwargs})
    load(model, ckpt, fmt)
    return model


def list_predictors(pattern: str | None = None) -> list[str]:
    return PREDICTORS.names(pattern)
