"""Reloading what training wrote: a run's method, its encoder, its configuration.

``load_run(RUN)`` rebuilds the method of a run directory (its newest checkpoint that loads)
or of a checkpoint file, with its trained weights; ``load_pretrained_encoder`` gives the
evaluation encoder that an action-conditioned run starts from. Modules are rebuilt from the
run's stored configuration, or -- for a Trainer built in Python, which has none -- from the
constructor calls every checkpoint records (:mod:`jepalab.specs`), so their shapes always
match the weights; every key must load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from jepalab.config import Config, EncoderConfig
from jepalab.errors import CheckpointError
from jepalab.methods import Method
from jepalab.specs import build_from_specs
from jepalab.train.checkpoint import load_checkpoint, load_newest, resolve_checkpoint

log = logging.getLogger(__name__)


def load_pretrained_encoder(
    path: str | Path, single_frame: bool = True
) -> tuple[nn.Module, EncoderConfig]:
    """The evaluation encoder (EMA target) of one of our I-JEPA / V-JEPA checkpoints, and the
    configuration it was built from.

    The encoder is rebuilt from the configuration stored in the checkpoint, so its shape
    always matches the weights. ``single_frame``: a video encoder is rebuilt for one tubelet
    (``num_frames = tubelet_size``) to embed single frames, as V-JEPA 2-AC does; its fixed
    sincos table is recomputed for that grid, every learned weight is loaded as is.
    """
    file = resolve_checkpoint(path)
    state = load_checkpoint(file)
    stored = state.get("config") or {}
    if "encoder" not in stored:
        raise ValueError(f"{file} holds no encoder configuration; is it a jepalab checkpoint?")
    # through the schema: keys of older versions get defaults, interpolations resolve
    encoder_section = config_from_checkpoint(state, file).encoder
    enc_cfg = EncoderConfig(**OmegaConf.to_container(encoder_section, resolve=True))
    if single_frame and enc_cfg.num_frames > 1:
        enc_cfg.num_frames = enc_cfg.tubelet_size
    from jepalab.experiment import build_encoder  # the builders use these loaders too

    encoder = build_encoder(enc_cfg)
    prefix = "target_encoder.module."
    if stored.get("method", {}).get("target") == "online":
        prefix = "context_encoder."  # no EMA copy: the context encoder is the target
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{file} has no target-encoder weights ({prefix}*)")
    if enc_cfg.num_frames != stored["encoder"].get("num_frames", 1):
        weights.pop("pos_embed", None)  # the fixed table of the longer clip
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k != "pos_embed"]
    if missing or unexpected:
        raise ValueError(f"{file}: encoder weights do not match: {missing=} {unexpected=}")
    log.info("loaded the pretrained encoder of %s (step %s)", file, state.get("step"))
    return encoder, enc_cfg


@dataclass
class LoadedRun:
    """A trained I-JEPA / V-JEPA method rebuilt from one of our checkpoints."""

    # the run's configuration (the :class:`Config` schema); None for a Trainer built in
    # Python, whose checkpoints record only the models (rebuilt from jepalab.specs)
    cfg: DictConfig | None
    method: Method  # I-JEPA / V-JEPA: context, EMA target encoder and predictor; eval mode
    step: int
    file: Path


def config_from_checkpoint(state: dict, file: Path) -> DictConfig:
    """The :class:`Config` stored in a training checkpoint, validated against the schema."""
    stored = state.get("config")
    if not stored:
        raise ValueError(f"{file} holds no run configuration; is it a jepalab checkpoint?")
    schema = OmegaConf.structured(Config)
    dropped: list[str] = []
    known = _known_keys(schema, stored, "", dropped)
    if dropped:
        log.warning(
            "%s: config keys unknown to this version of jepalab are ignored: %s",
            file,
            ", ".join(dropped),
        )
    return OmegaConf.merge(schema, known)


def _known_keys(schema: Any, stored: Any, prefix: str, dropped: list[str]) -> Any:
    """``stored`` without the keys that ``schema`` (a structured section) does not have."""
    if not isinstance(stored, dict) or not isinstance(schema, DictConfig):
        return stored
    if schema._metadata.object_type in (None, dict):  # a free-form dict (e.g. data.params)
        return stored
    out = {}
    for key, value in stored.items():
        if key not in schema:
            dropped.append(prefix + key)
            continue
        child = schema._get_node(key)
        out[key] = _known_keys(child, value, f"{prefix}{key}.", dropped)
    return out


def load_run(path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild the masked-JEPA method of a run directory (newest checkpoint) or checkpoint
    file, with its trained weights, for evaluation (probes, surprise).

    The modules are built from the configuration stored in the checkpoint, so their shapes
    always match the weights; every key must load (``strict``).
    """
    file, state = load_newest(path)  # past damaged newer checkpoints
    specs = state.get("models") or {}
    cfg = config_from_checkpoint(state, file) if state.get("config") else None
    if cfg is not None and cfg.method.name in ("ijepa", "vjepa"):
        from jepalab.experiment import build_initial_method

        method = build_initial_method(cfg)
    elif "" in specs:  # a Trainer built in Python, or a method without a config builder
        method = build_from_specs(specs)
    elif cfg is None:
        raise CheckpointError(
            f"{file} records neither a run configuration nor its models; it was written by "
            "an older jepalab Trainer from Python and cannot be rebuilt"
        )
    else:
        raise CheckpointError(
            f"{file} is a method.name={cfg.method.name!r} run written before models were "
            "recorded; load_run rebuilds such runs only for I-JEPA / V-JEPA"
        )
    method.load_state_dict(state["model"])
    method.to(device).eval()
    log.info("loaded %s run %s (step %s)", type(method).__name__, file, state.get("step"))
    return LoadedRun(cfg, method, int(state.get("step", 0)), file)


__all__ = ["LoadedRun", "config_from_checkpoint", "load_pretrained_encoder", "load_run"]
