"""Encoders and predictors from their config sections (``encoder.*``, ``predictor.*``).

Each ``build_*`` takes the (Hydra/OmegaConf or dataclass) section it needs, so any piece
can be built from Python without Hydra.
"""

from __future__ import annotations

from typing import Any

from omegaconf import ListConfig
from torch import nn

from jepalab.config import EncoderConfig, PredictorConfig, schema_mismatch
from jepalab.models.registry import create_encoder, create_predictor

VIT_SHAPE_KEYS = ("embed_dim", "depth", "num_heads")
CONVNEXT_SHAPE_KEYS = ("dims", "depths")


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by ``cfg.name`` with the shape of ``cfg``: a
    :class:`~jepalab.config.ViTEncoderConfig` (``embed_dim/depth/num_heads``, positions) or a
    :class:`~jepalab.config.ConvNeXtEncoderConfig` (``dims/depths``), as a dataclass or a
    composed section; the grid keys (``img_size``, ``patch_size``, ``num_frames``) are every
    encoder's.

    Raises:
        ValueError: If the section's schema is not the one registered for ``cfg.name``.
    """
    mismatch = schema_mismatch("encoder", cfg)
    if mismatch is not None:
        given, expected = mismatch
        raise ValueError(
            f"encoder.name={cfg.name!r} needs a {expected.__name__} section, not "
            f"{given.__name__} (choose the encoder with encoder=<configs/encoder option>)"
        )
    kwargs: dict[str, Any] = dict(
        img_size=cfg.img_size, in_chans=cfg.in_chans, drop_path_rate=cfg.drop_path_rate
    )
    if cfg.num_frames > 1:
        kwargs.update(num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size)
    if cfg.patch_size is not None:
        kwargs["patch_size"] = cfg.patch_size
    for key in VIT_SHAPE_KEYS + CONVNEXT_SHAPE_KEYS:
        value = getattr(cfg, key, None)
        if value is not None:
            kwargs[key] = tuple(value) if isinstance(value, (list, tuple, ListConfig)) else value
    if hasattr(cfg, "pos_embed"):  # an attention encoder
        kwargs.update(attn_backend=cfg.attn_backend, pos_embed=cfg.pos_embed)
        if cfg.pos_embed == "rope":
            kwargs["rope_reference_layout"] = cfg.rope_reference_layout
    encoder = create_encoder(cfg.name, **kwargs)
    if cfg.grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder


def build_predictor(
    cfg: PredictorConfig,
    encoder: nn.Module,
    attn_backend: str = "auto",
    num_mask_tokens: int = 1,
    **extra: Any,
) -> nn.Module:
    """The predictor for ``encoder``'s token grid, width and positional scheme; ``extra``:
    further constructor arguments (V-JEPA 2.1's ``levels``, ``predict_context``)."""
    return create_predictor(
        cfg.name,
        grid_size=encoder.grid_size,
        encoder_dim=encoder.embed_dim,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads or default_num_heads(encoder, cfg.embed_dim),
        drop_path_rate=cfg.drop_path_rate,
        attn_backend=attn_backend,
        num_mask_tokens=num_mask_tokens,
        **predictor_positions(cfg.pos_embed, encoder),
        **extra,
    )


def predictor_positions(pos_embed: str | None, encoder: nn.Module) -> dict[str, Any]:
    """The predictor's position scheme: ``predictor.pos_embed`` or the encoder's, and for
    RoPE the encoder's channel layout (``encoder.rope_reference_layout``)."""
    kind = pos_embed or encoder.pos_embed_kind
    out: dict[str, Any] = {"pos_embed": kind}
    if kind == "rope":
        rope = getattr(encoder, "rope", None)
        out["rope_reference_layout"] = bool(getattr(rope, "reference_layout", False))
    return out


def default_num_heads(encoder: nn.Module, width: int) -> int:
    """Predictor heads when not configured: the encoder's (I-JEPA), or for an encoder without
    attention (ConvNeXt) heads of width 32 (V-JEPA's predictor: 384 wide, 12 heads)."""
    heads = getattr(encoder, "num_heads", None)
    return heads if heads else max(1, width // 32)


__all__ = [
    "CONVNEXT_SHAPE_KEYS",
    "VIT_SHAPE_KEYS",
    "build_encoder",
    "build_predictor",
    "default_num_heads",
    "predictor_positions",
]
