"""Whether a jepalab model can be written in an official layout *and compute the same*.

Weights alone cannot say which position scheme, RoPE channel layout or head count they were
trained with, and the official code builds its models from its own architecture tables. So
an export that only renames tensors can load cleanly in the official code and compute
something else (a RoPE encoder in jepalab's channel layout exported as ``vjepa2``: relative
error 0.25; a predictor with other heads: 0.53). Before writing, the model's recorded
constructor call (:mod:`jepalab.specs`, stored in every Trainer checkpoint) is compared with
what the official code would build:

* position scheme (``pos_embed``) and, for RoPE, the channel layout: V-JEPA 2's release
  rotates channel pairs by two different angles (``rope_reference_layout``), which is not a
  permutation of a rotation, so no exact conversion exists: the export is refused, naming
  the option to train with;
* head counts: the official code takes them from its architecture table (encoders) and,
  for predictors, from the encoder (I-JEPA, V-JEPA: refused if they differ) or from its
  config (V-JEPA 2's ``pred_num_heads``: a warning names the value to set);
* the model family: the official code builds ViTs only.

A model whose width has no official architecture can still be exported (the official
constructors take any size), with a warning that says which arguments to pass them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from jepalab.errors import CheckpointError
from jepalab.interop.common import OfficialLayout
from jepalab.models.vit import VIT_SIZES

log = logging.getLogger(__name__)

_VIT = "jepalab.models.vit.VisionTransformer"
_PREDICTORS = (
    "jepalab.models.predictor.MaskedPredictor",
    "jepalab.models.action_predictor.ActionConditionedPredictor",
)


def _positions(kwargs: Mapping[str, Any]) -> tuple[str, bool]:
    pos = kwargs.get("pos_embed", "sincos")
    return pos, bool(kwargs.get("rope_reference_layout", False)) if pos == "rope" else False


def _describe(pos: str, ref: bool) -> str:
    if pos != "rope":
        return f"pos_embed={pos!r}"
    return f"pos_embed='rope' in {'V-JEPA 2 release' if ref else 'jepalab'} channel layout"


def _position_fix(layout: OfficialLayout, wanted: tuple[str, bool], kind: str) -> str:
    pos, ref = wanted
    if pos == "rope":
        option = "encoder.pos_embed=rope encoder.rope_reference_layout=true"
        if kind == "predictor":
            option += " (the predictor follows the encoder)"
        return f"train with {option} to export to {layout.name}"
    others = "vjepa (video) or ijepa (images)"
    return f"train with {kind}.pos_embed=sincos to export to {layout.name}, or export to {others}"


def _check_positions(role: str, spec: Mapping[str, Any], layout: OfficialLayout) -> None:
    layout_kwargs = layout.predictor_kwargs if role == "predictor" else layout.encoder_kwargs
    if "pos_embed" not in layout_kwargs:
        return
    have, want = _positions(spec["kwargs"]), _positions(layout_kwargs)
    if have != want:
        kind = "predictor" if role == "predictor" else "encoder"
        raise CheckpointError(
            f"cannot export the {role} to {layout.name}: it uses {_describe(*have)}, the "
            f"official code {_describe(*want)}, and no reordering of the weights makes one "
            f"compute the other; {_position_fix(layout, want, kind)}"
        )


def official_encoder_heads(layout: OfficialLayout, width: int, depth: int) -> int | None:
    """Heads of the official encoder of this width and depth (``None``: no official size)."""
    if width in layout.encoder_heads:
        return layout.encoder_heads[width]
    for size in VIT_SIZES.values():
        if (size["embed_dim"], size["depth"]) == (width, depth):
            return int(size["num_heads"])
    return None


def check_exportable(view: Mapping[str, Any], layout: OfficialLayout) -> None:
    """Raise :class:`CheckpointError` if the official code would compute something else
    with the exported weights; warn where it cannot be told (no recorded model)."""
    configs: Mapping[str, Any] = view.get("config") or {}
    roles = [r for r in ("encoder", "target_encoder", "predictor") if r in view]
    encoder_heads = None
    unrecorded, checked = [], []
    for role in roles:
        spec = configs.get(role) or (configs.get("encoder") if role != "predictor" else None)
        if not spec:
            unrecorded.append(role)
            continue
        if spec in checked:  # the target encoder: the encoder's copy, checked (and said) once
            continue
        checked.append(spec)
        cls, kwargs = spec.get("class"), spec["kwargs"]
        family = _PREDICTORS if role == "predictor" else (_VIT,)
        if cls is not None and cls not in family:
            raise CheckpointError(
                f"cannot export the {role} to {layout.name}: it is a {cls.rsplit('.', 1)[-1]}, "
                "and the official code builds Vision Transformers only"
            )
        if role == "predictor" and (
            int(kwargs.get("levels", 1)) > 1 or kwargs.get("predict_context", False)
        ):
            raise CheckpointError(
                f"cannot export the predictor to {layout.name}: it is V-JEPA 2.1's dense "
                "predictor (several encoder levels or a context head), which the "
                f"{layout.name} code does not build"
            )
        _check_positions(role, spec, layout)
        heads = kwargs.get("num_heads")
        if role != "predictor":
            width, depth = kwargs.get("embed_dim"), kwargs.get("depth")
            official = official_encoder_heads(layout, width, depth) if width else None
            encoder_heads = heads
        elif layout.predictor_heads is not None:  # V-JEPA 2: a config value, pred_num_heads
            if heads is not None and int(heads) != layout.predictor_heads:
                log.warning(
                    "exporting the predictor to %s: it has num_heads=%s (the released models: "
                    "%s); set pred_num_heads: %s in the official config, or it will load and "
                    "compute something else",
                    layout.name,
                    heads,
                    layout.predictor_heads,
                    heads,
                )
            continue
        else:  # I-JEPA / V-JEPA build the predictor with the encoder's heads, always
            official = encoder_heads
        if heads is None:
            log.warning("exporting the %s to %s: its head count is not recorded", role, layout.name)
        elif official is not None and int(heads) != int(official):
            where = "architecture table" if role != "predictor" else "predictor configuration"
            raise CheckpointError(
                f"cannot export the {role} to {layout.name}: it has num_heads={heads}, the "
                f"official {where} builds it with {official} (the weights would load and "
                "compute something else); train with the official head count"
            )
        elif official is None and role != "predictor" and not spec.get("partial"):
            log.warning(
                "exporting the %s to %s: no official architecture has width %s and depth %s; "
                "build it in the official code with embed_dim=%s, depth=%s, num_heads=%s",
                role,
                layout.name,
                kwargs.get("embed_dim"),
                kwargs.get("depth"),
                kwargs.get("embed_dim"),
                kwargs.get("depth"),
                heads,
            )
    if unrecorded:
        log.warning(
            "exporting to %s: the checkpoint does not record how its %s %s built, so position "
            "scheme and heads cannot be checked against the official code's",
            layout.name,
            " and ".join(unrecorded),
            "was" if len(unrecorded) == 1 else "were",
        )


__all__ = ["check_exportable", "official_encoder_heads"]
