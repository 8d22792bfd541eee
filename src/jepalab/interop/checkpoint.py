"""Whole checkpoint files: detect the layout, convert official <-> jepalab, load strictly.

A *jepalab interop file* (what ``jepalab convert out_format=jepalab`` writes) is a plain dict::

    {"format": "jepalab", "version": 1, "source": "vjepa2",
     "encoder": {...}, "target_encoder": {...}, "predictor": {...},   # jepalab key names
     "config": {"encoder": {"name": ..., "kwargs": {...}}, "predictor": {...}},
     "unused": {"encoder": {"pos_embed": ...}},   # official tensors the reference ignores
     "meta": {"epoch": 300, ...}}                 # the official file's scalar entries

Everything in it loads with ``torch.load(weights_only=True)``. Optimizer and scaler states are
not converted (they are logged as dropped). A jepalab *training* checkpoint (the Trainer's
``{"model": method.state_dict(), ...}``) is accepted wherever a jepalab file is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jepalab.interop import ijepa, infer, vjepa, vjepa2
from jepalab.interop.common import (
    ROLES,
    CheckpointMismatchError,
    OfficialLayout,
    StateDict,
    add_prefix,
    load_strict,
    strip_wrappers,
    wrapper_prefix,
)
from jepalab.interop.exportable import check_exportable

log = logging.getLogger(__name__)

JEPALAB = "jepalab"
TRAINER_FORMAT = "jepalab.train/"  # the Trainer's checkpoints (train/trainer.py)
LAYOUTS: dict[str, OfficialLayout] = {
    layout.name: layout
    for layout in (
        ijepa.LAYOUT,
        vjepa.LAYOUT,
        vjepa2.LAYOUT,
        vjepa2.AC_LAYOUT,
        vjepa2.AC_EXTRINSICS_LAYOUT,
    )
}
FORMATS = (JEPALAB, *LAYOUTS)
# Where a Trainer checkpoint keeps each role when it does not say (``"roles"``, written from
# ``Method.checkpoint_roles`` since 2026-12-03): the module paths of I-JEPA / V-JEPA and of
# the action-conditioned method.
_LEGACY_ROLES = {
    "context_encoder": "encoder",
    "target_encoder.module": "target_encoder",
    "encoder": "encoder",
    "predictor": "predictor",
}


def trainer_roles(ckpt: Mapping[str, Any]) -> dict[str, str]:
    """``{module path: role}`` of a Trainer checkpoint: what its method declared, or the
    built-in methods' paths for a checkpoint that predates the declaration."""
    roles = ckpt.get("roles")
    if isinstance(roles, Mapping) and roles:
        return {str(k): str(v) for k, v in roles.items()}
    return dict(_LEGACY_ROLES)


# -- reading ----------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends
        raise ValueError(
            f"{path} does not load with torch.load(weights_only=True) ({err}); jepalab never "
            "unpickles code. Re-save its tensors as plain dicts of tensors."
        ) from err
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return dict(ckpt)


def _is_trainer(ckpt: Mapping[str, Any]) -> bool:
    """A checkpoint written by :class:`~jepalab.train.Trainer` (``format: jepalab.train/N``;
    files of early versions had no ``format`` key)."""
    fmt = ckpt.get("format")
    trainer_format = fmt is None or (isinstance(fmt, str) and fmt.startswith(TRAINER_FORMAT))
    return isinstance(ckpt.get("model"), Mapping) and trainer_format


def _roles(ckpt: Mapping[str, Any]) -> list[str]:
    return [r for r in ROLES if isinstance(ckpt.get(r), Mapping)]


def detect_format(ckpt: Mapping[str, Any]) -> str:
    """The layout of a loaded checkpoint: ``"jepalab"`` or one of the official layouts.

    Rules, from the official model definitions: an AC predictor has ``action_encoder``; an
    I-JEPA encoder embeds images (a 4-D ``patch_embed.proj.weight``); a V-JEPA 2 encoder or
    predictor has no sincos table (RoPE), or more mask tokens than V-JEPA's two; what remains
    is V-JEPA. An encoder-only V-JEPA 2 file that also saved its unused sincos table looks
    like V-JEPA: name the layout then (``src_format=vjepa2`` / ``source="vjepa2"``, or build the
    encoder with ``pos_embed="rope"``, which :func:`load_encoder` takes as the hint).
    """
    if ckpt.get("format") == JEPALAB or _is_trainer(ckpt):
        return JEPALAB
    roles = _roles(ckpt)
    if not roles:
        raise ValueError(
            f"not a JEPA checkpoint: none of {ROLES} in its keys {sorted(ckpt)[:10]}; a bare "
            "state dict must be wrapped as {'encoder': state_dict} (or 'predictor')"
        )
    encoder = next((strip_wrappers(ckpt[r]) for r in roles if r != "predictor"), {})
    predictor = strip_wrappers(ckpt["predictor"]) if "predictor" in roles else {}
    if "action_encoder.weight" in predictor:
        return "vjepa2_ac"
    proj = encoder.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 4 or "mask_token" in predictor:
        return "ijepa"
    if (encoder and "pos_embed" not in encoder) or (
        predictor and "predictor_pos_embed" not in predictor
    ):
        return "vjepa2"
    if sum(k.startswith("mask_tokens.") for k in predictor) > 2:
        return "vjepa2"  # V-JEPA: one token per mask configuration (2); V-JEPA 2's hub: 10
    return "vjepa"


# -- official -> jepalab ----------------------------------------------------------------------
def _suggest(layout: OfficialLayout, weights: Mapping[str, StateDict]) -> dict[str, Any]:
    """The jepalab constructors (name + kwargs) that fit these converted weights."""
    config: dict[str, Any] = {}
    encoder = weights.get("target_encoder") or weights.get("encoder")
    grid, heads = None, layout.predictor_heads
    if encoder is not None:
        width = encoder["patch_embed.proj.weight"].shape[0]
        name, kwargs = infer.encoder_config(
            encoder, dict(layout.encoder_kwargs), layout.encoder_heads.get(width)
        )
        config["encoder"] = {"name": name, "kwargs": kwargs}
        grid = infer.grid_of(name, kwargs)
        heads = heads or infer.heads_of(name, kwargs)
    if "predictor" in weights:
        if layout.predictor == "action_predictor":
            config_fn = infer.action_predictor_config
            grid = grid[-2:] if grid else None
        else:
            config_fn = infer.masked_predictor_config
        kwargs = config_fn(weights["predictor"], dict(layout.predictor_kwargs), heads, grid)
        config["predictor"] = {"name": layout.predictor, "kwargs": kwargs}
    return config


# Layouts that the weights alone cannot always tell apart (see detect_format).
_LOOKALIKES = ({"vjepa", "vjepa2"}, {"vjepa2_ac", "vjepa2_ac_extrinsics"})


def _check_source(ckpt: Mapping[str, Any], source: str) -> None:
    detected = detect_format(ckpt)
    if detected == source or any({detected, source} <= pair for pair in _LOOKALIKES):
        return
    raise ValueError(
        f"the checkpoint is laid out as {detected!r}, not {source!r}; pass the right "
        f"format (or leave it out to detect it)"
    )


def to_jepalab(ckpt: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Convert a loaded official checkpoint to a jepalab interop dict (see module docs)."""
    if source is None:
        source = detect_format(ckpt)
        _warn_if_ambiguous(ckpt, source)
    else:
        _check_source(ckpt, source)
    if source == JEPALAB:
        return _jepalab_view(ckpt)
    layout = _layout(source)
    out: dict[str, Any] = {"format": JEPALAB, "version": 1, "source": source}
    unused: dict[str, StateDict] = {}
    prefixes: dict[str, str] = {}
    for role in _roles(ckpt):
        prefixes[role] = wrapper_prefix(ckpt[role])
        raw = strip_wrappers(ckpt[role], where=f"{source} checkpoint [{role}]")
        convert = layout.predictor_in if role == "predictor" else layout.encoder_in
        converted = convert(raw)
        out[role] = converted.state_dict
        if converted.unused:
            unused[role] = converted.unused
            log.info(
                "%s [%s]: kept aside tensors the reference does not use: %s",
                source,
                role,
                sorted(converted.unused),
            )
    if not any(r in out for r in ROLES):
        raise ValueError(f"the {source} checkpoint holds none of {ROLES}")
    dropped = [k for k, v in ckpt.items() if k not in ROLES and not _is_scalar(v)]
    if dropped:
        log.info("%s checkpoint: not converted (not model weights): %s", source, dropped)
    out["unused"] = unused
    out["prefixes"] = prefixes  # written back on export to the same layout (bit-identical)
    out["meta"] = {k: v for k, v in ckpt.items() if k not in ROLES and _is_scalar(v)}
    out["config"] = _suggest(layout, {r: out[r] for r in ROLES if r in out})
    return out


def _warn_if_ambiguous(ckpt: Mapping[str, Any], detected: str) -> None:
    """Say so when the weights alone could be another layout (see :func:`detect_format`)."""
    if detected == "vjepa" and "predictor" not in _roles(ckpt):
        log.warning(
            "read as a V-JEPA encoder (sincos table); a V-JEPA 2 encoder that kept its unused "
            "sincos table looks the same: pass src_format=vjepa2 (source='vjepa2') if it is one"
        )
    if detected == "vjepa2_ac":
        log.warning(
            "read as V-JEPA 2-AC without extrinsics (the released model): its "
            "extrinsics_encoder is set aside; pass src_format=vjepa2_ac_extrinsics to use it"
        )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _layout(name: str) -> OfficialLayout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {name!r}; choose one of {FORMATS}")
    return LAYOUTS[name]


def _jepalab_view(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """A jepalab interop dict as is, or a Trainer checkpoint's models split into roles."""
    if not _is_trainer(ckpt):
        return dict(ckpt)
    out: dict[str, Any] = {"format": JEPALAB, "version": 1, "source": JEPALAB, "unused": {}}
    roles = trainer_roles(ckpt)
    for key, value in ckpt["model"].items():
        for path, role in roles.items():
            if key.startswith(path + "."):
                out.setdefault(role, {})[key[len(path) + 1 :]] = value
                break
    if not any(r in out for r in ROLES):
        raise ValueError(
            f"the training checkpoint's model has none of the module paths {list(roles)} "
            "(its method's checkpoint_roles)"
        )
    out["meta"] = {k: v for k, v in ckpt.items() if k == "step" and _is_scalar(v)}
    out["config"] = trainer_model_configs(ckpt)
    return out


def trainer_model_configs(ckpt: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{role: {"name", "class", "kwargs"}}``: how a Trainer checkpoint's models were built.

    From the recorded constructor calls (``ckpt["models"]``); a checkpoint written before
    they were recorded falls back to what its run configuration says about positions and
    heads (partial ``kwargs``, ``"partial": True``).
    """
    out: dict[str, dict[str, Any]] = {}
    roles = trainer_roles(ckpt)  # the recorded models sit at the roles' module paths
    for path, spec in (ckpt.get("models") or {}).items():
        role = roles.get(path)
        if role is not None:
            out[role] = {"name": spec.get("name"), "class": spec["class"]}
            out[role]["kwargs"] = dict(spec["kwargs"])
    if not out and isinstance(ckpt.get("config"), Mapping):
        out = _configs_from_run_config(ckpt["config"])
    if "encoder" in out:
        out.setdefault("target_encoder", out["encoder"])
    return out


def _configs_from_run_config(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    enc, pred = cfg.get("encoder") or {}, cfg.get("predictor") or {}
    name = str(enc.get("name", ""))
    pos = enc.get("pos_embed", "sincos")
    enc_kwargs = {
        "pos_embed": pos,
        "rope_reference_layout": enc.get("rope_reference_layout", False),
    }
    heads = (enc.get("num_heads") or infer.heads_of(name, {})) if name.startswith("vit") else None
    if heads:
        enc_kwargs["num_heads"] = heads
    out = {"encoder": {"name": name, "class": None, "kwargs": enc_kwargs, "partial": True}}
    if pred:
        pred_kwargs = {
            "pos_embed": pred.get("pos_embed") or pos,
            "rope_reference_layout": enc_kwargs["rope_reference_layout"],
            "num_heads": pred.get("num_heads") or heads,
        }
        out["predictor"] = {"name": pred.get("name"), "class": None, "kwargs": pred_kwargs}
        out["predictor"]["partial"] = True
    return out


# -- jepalab -> official ----------------------------------------------------------------------
def to_official(ckpt: Mapping[str, Any], target: str) -> dict[str, Any]:
    """Convert a jepalab interop dict (or training checkpoint) to an official layout.

    Tensors the conversion set aside (``unused``) are restored when ``target`` is the layout
    they came from. When only one of ``encoder`` / ``target_encoder`` exists it is written
    under both keys: the official evaluation code reads ``target_encoder``, their training
    code ``encoder`` (vjepa2's AC training saves both the same way).
    """
    layout = _layout(target)
    view = _jepalab_view(ckpt)
    same_source = view.get("source") == target
    if not same_source:  # weights from that very layout compute what they did there
        check_exportable(view, layout)
    out: dict[str, Any] = dict(view.get("meta", {})) if same_source else {}
    encoders = [r for r in ("encoder", "target_encoder") if r in view]
    roles = {r: view[r] for r in encoders}
    if len(encoders) == 1:
        other = "target_encoder" if encoders[0] == "encoder" else "encoder"
        roles[other] = view[encoders[0]]
    if "predictor" in view:
        roles["predictor"] = view["predictor"]
    if not roles:
        raise ValueError(f"nothing to export: the checkpoint holds none of {ROLES}")
    for role, weights in roles.items():
        convert = layout.predictor_out if role == "predictor" else layout.encoder_out
        official = convert(dict(weights))
        if same_source:
            official.update(view.get("unused", {}).get(role, {}))
        prefix = layout.prefixes[role]
        if same_source:
            prefix = view.get("prefixes", {}).get(role, prefix)
        out[role] = add_prefix(official, prefix)
    return out


def convert_file(
    src: str | Path, dst: str | Path, source: str = "auto", target: str = JEPALAB
) -> str:
    """Read ``src``, convert it from ``source`` (``"auto"``: detect) to ``target``, save to
    ``dst`` atomically. Returns the source layout used."""
    from jepalab.checkpoint import save_atomic

    ckpt = read_checkpoint(src)
    source = detect_format(ckpt) if source == "auto" else source
    try:
        _check_source(ckpt, source)
    except ValueError as err:
        raise ValueError(f"{src}: {err}") from None
    if target == JEPALAB:
        out = to_jepalab(ckpt, source)
    else:
        out = to_official(to_jepalab(ckpt, source), target)
    save_atomic(out, Path(dst))
    return source


# -- loading into jepalab modules -------------------------------------------------------------
def _source_of(ckpt: Mapping[str, Any], source: str | None, rope: bool | None) -> str:
    fmt = source or detect_format(ckpt)
    if fmt == "vjepa" and rope and source is None:
        fmt = "vjepa2"  # V-JEPA 2 file that kept its unused sincos tables (see detect_format)
    return fmt


def implied_kwargs(
    ckpt: Mapping[str, Any], kind: str, source: str | None = None, rope: bool | None = None
) -> tuple[str, dict[str, Any]]:
    """``(layout, constructor kwargs the layout implies)`` for an encoder or a predictor
    (``kind``), e.g. V-JEPA 2's ``pos_embed="rope", rope_reference_layout=True``."""
    fmt = _source_of(ckpt, source, rope)
    origin = ckpt.get("source", JEPALAB) if fmt == JEPALAB else fmt
    if origin not in LAYOUTS:
        recorded = (to_jepalab(ckpt, fmt).get("config") or {}) if fmt == JEPALAB else {}
        role = "target_encoder" if kind == "encoder" else "predictor"
        spec = recorded.get(role) or recorded.get("encoder" if kind == "encoder" else role)
        return fmt, dict(spec["kwargs"]) if spec and not spec.get("partial") else {}
    layout = LAYOUTS[origin]
    return fmt, dict(layout.encoder_kwargs if kind == "encoder" else layout.predictor_kwargs)


def _check_positions(model: nn.Module, wanted: Mapping[str, Any], where: str) -> None:
    """The weights of a layout only reproduce the reference with its position scheme."""
    if "pos_embed" not in wanted:
        return
    rope = getattr(model, "rope", None)
    kind = getattr(model, "pos_embed_kind", None) or ("rope" if rope is not None else "sincos")
    reference = getattr(model, "rope_reference_layout", None)
    if reference is None:
        reference = bool(getattr(rope, "reference_layout", False))
    want_ref = bool(wanted.get("rope_reference_layout", False))
    if kind != wanted["pos_embed"] or (kind == "rope" and reference != want_ref):
        raise CheckpointMismatchError(
            f"{where} was trained with pos_embed={wanted['pos_embed']!r}"
            + (f", rope_reference_layout={want_ref}" if wanted["pos_embed"] == "rope" else "")
            + f"; the model has pos_embed={kind!r}"
            + (f", rope_reference_layout={reference}" if kind == "rope" else "")
            + ". Build it with those options (or leave them unset with checkpoint=...)."
        )


def _check_heads(model: nn.Module, wanted: Mapping[str, Any], where: str) -> None:
    """Head counts are not in the weights (``qkv`` is ``(3 D, D)`` for any): a model with
    other heads would load and compute something else, so a recorded count must match."""
    heads, recorded = _heads(model), wanted.get("num_heads")
    if heads is not None and recorded is not None and int(recorded) != heads:
        raise CheckpointMismatchError(
            f"{where} was trained with num_heads={recorded}; the model has {heads} (same "
            "weights, different attention). Build it with num_heads="
            f"{recorded} (or leave it unset with checkpoint=...)."
        )


def _recorded_call(view: Mapping[str, Any], role: str) -> str:
    spec = (view.get("config") or {}).get(role) or {}
    if not spec.get("name"):
        return "not recorded"
    return f"{spec['name']}(**{spec.get('kwargs', {})})"


def _uses_rope(model: nn.Module) -> bool:
    kind = getattr(model, "pos_embed_kind", "")
    return getattr(model, "rope", None) is not None or kind == "rope"


def _pick(view: Mapping[str, Any], key: str, default: str, where: str) -> StateDict:
    if key in view and isinstance(view[key], Mapping):
        return dict(view[key])
    if key == default and "encoder" in view:
        log.info("%s has no %r; loading its 'encoder'", where, key)
        return dict(view["encoder"])
    raise KeyError(f"{where} has no {key!r}; it holds {[r for r in ROLES if r in view]}")


def _heads(model: nn.Module) -> int | None:
    """Attention heads of a ViT or predictor; ``None`` for a model without attention."""
    blocks = getattr(model, "blocks", None) or getattr(model, "predictor_blocks", None)
    attn = getattr(blocks[0], "attn", None) if blocks else None
    return getattr(attn, "num_heads", None)


def load_encoder(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    key: str = "target_encoder",
    source: str | None = None,
    label: str | None = None,
) -> str:
    """Load an encoder's weights from any supported file into ``model``, strictly.

    Args:
        model: a :class:`~jepalab.models.VisionTransformer`.
        checkpoint: a path or an already loaded dict (official or jepalab).
        key: which encoder: ``"target_encoder"`` (the EMA encoder, what the official
            evaluations use) or ``"encoder"`` (the context encoder).
        source: the layout, or ``None`` to detect it.
        label: how errors name an already loaded checkpoint (default: its path).

    Returns:
        The layout the weights were read as.
    """
    where = label or (str(checkpoint) if isinstance(checkpoint, (str, Path)) else "checkpoint")
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    fmt, wanted = implied_kwargs(ckpt, "encoder", source, _uses_rope(model))
    where = f"{where} [{key}, {fmt} layout]"
    view = to_jepalab(ckpt, fmt)
    weights = _pick(view, key, "target_encoder", where)
    _check_positions(model, wanted, where)
    _check_heads(model, wanted, where)
    if "patch_embed.proj.weight" in weights:  # a ViT: say which call would fit the weights
        grid = getattr(model, "patch_embed", None)
        img = grid.img_size[0] if grid is not None else None
        name, kwargs = infer.encoder_config(
            weights, wanted, _heads(model), img, getattr(model, "num_frames", None)
        )
        call = infer.encoder_call(name, kwargs)
    else:
        call = f"the encoder the checkpoint records ({_recorded_call(view, key)})"
    load_strict(model, weights, where, call)
    return fmt


def load_predictor(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    source: str | None = None,
    label: str | None = None,
) -> str:
    """Load a predictor's weights from any supported file into ``model``, strictly
    (:class:`~jepalab.models.MaskedPredictor` or
    :class:`~jepalab.models.ActionConditionedPredictor`). Returns the layout used."""
    where = label or (str(checkpoint) if isinstance(checkpoint, (str, Path)) else "checkpoint")
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    fmt, wanted = implied_kwargs(ckpt, "predictor", source, _uses_rope(model))
    where = f"{where} [predictor, {fmt} layout]"
    view = to_jepalab(ckpt, fmt)
    if "predictor" not in view:
        raise KeyError(f"{where}: no predictor; it holds {[r for r in ROLES if r in view]}")
    weights = dict(view["predictor"])
    _check_positions(model, wanted, where)
    _check_heads(model, wanted, where)
    grid = tuple(model.grid_size) if hasattr(model, "grid_size") else None
    if "action_encoder.weight" in weights:
        name = "action_predictor"
        kwargs = infer.action_predictor_config(weights, wanted, _heads(model), grid)
    else:
        name = "masked_vit_predictor"
        kwargs = infer.masked_predictor_config(weights, wanted, _heads(model), grid)
    load_strict(model, weights, where, infer.predictor_call(name, kwargs))
    return fmt


def tensors_equal(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    """Same keys, and every tensor equal in shape, dtype and value."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


__all__ = [
    "FORMATS",
    "JEPALAB",
    "LAYOUTS",
    "convert_file",
    "detect_format",
    "implied_kwargs",
    "load_encoder",
    "load_predictor",
    "read_checkpoint",
    "tensors_equal",
    "to_jepalab",
    "to_official",
]
