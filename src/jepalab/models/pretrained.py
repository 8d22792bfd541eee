"""The pretrained encoder of one of our I-JEPA / V-JEPA checkpoints (what an
action-conditioned run starts from, ``method.encoder_checkpoint=``)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from jepalab.checkpoint import load_checkpoint, resolve_checkpoint
from jepalab.config import EncoderConfig, config_from_checkpoint
from jepalab.models.build import build_encoder

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
    enc_cfg = OmegaConf.to_object(encoder_section)  # the dataclass of its schema
    if single_frame and enc_cfg.num_frames > 1:
        enc_cfg.num_frames = enc_cfg.tubelet_size
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


__all__ = ["load_pretrained_encoder"]
