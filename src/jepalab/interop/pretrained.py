"""Registered models with weights from a checkpoint: official I-JEPA / V-JEPA / V-JEPA 2
files or jepalab's own (a run directory's ``step_*.pt``).

>>> from jepalab import create_encoder
>>> enc = create_encoder("vit_large_patch16", checkpoint="vitl.pt")  # layout detected

Without a checkpoint these are :func:`jepalab.models.create_encoder` and
:func:`jepalab.models.create_predictor`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from jepalab import models
from jepalab.interop.checkpoint import (
    implied_kwargs,
    load_encoder,
    load_predictor,
    read_checkpoint,
)


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
        return models.create_encoder(name, **kwargs)

    def load(model: nn.Module, ckpt: dict, fmt: str) -> None:
        load_encoder(model, ckpt, checkpoint_key, fmt, label=str(checkpoint))

    return _create_from_checkpoint(
        models.create_encoder, "encoder", name, checkpoint, checkpoint_format, kwargs, load
    )


def create_predictor(
    name: str,
    checkpoint: str | Path | None = None,
    checkpoint_format: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered predictor; with ``checkpoint``, load its ``predictor`` strictly
    (layout detected as for :func:`create_encoder`)."""
    if checkpoint is None:
        return models.create_predictor(name, **kwargs)

    def load(model: nn.Module, ckpt: dict, fmt: str) -> None:
        load_predictor(model, ckpt, fmt, label=str(checkpoint))

    return _create_from_checkpoint(
        models.create_predictor, "predictor", name, checkpoint, checkpoint_format, kwargs, load
    )


def _create_from_checkpoint(
    create: Callable[..., nn.Module],
    kind: str,
    name: str,
    checkpoint: str | Path,
    checkpoint_format: str | None,
    kwargs: dict[str, Any],
    load: Callable[[nn.Module, dict, str], None],
) -> nn.Module:
    """Read ``checkpoint``, build ``name`` with the options its format implies (``kwargs``
    win), and ``load`` its weights into the model strictly."""
    ckpt = read_checkpoint(checkpoint)
    rope = kwargs.get("pos_embed") == "rope" or None
    fmt, implied = implied_kwargs(ckpt, kind, checkpoint_format, rope)
    model = create(name, **{**implied, **kwargs})
    load(model, ckpt, fmt)
    return model


__all__ = ["create_encoder", "create_predictor"]
