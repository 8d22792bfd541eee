"""Mask generators from the ``mask.*`` config section: I-JEPA's 2-D multi-block masks
(``mask=multiblock``) and V-JEPA's 3-D ones (``mask=multiblock3d``)."""

from __future__ import annotations

from jepalab.config import MaskConfig
from jepalab.masks.collator import MaskGenerator
from jepalab.masks.multiblock import MultiBlockMaskGenerator
from jepalab.masks.multiblock3d import BlockSpec, MultiBlock3DMaskGenerator
from jepalab.registry import Registry

# mask.name -> a builder ``(cfg, grid_size) -> MaskGenerator``
MASKS: Registry = Registry("mask generator", key="mask.name")


def build_mask_generator(cfg: MaskConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """The mask generator registered as ``cfg.name`` for the encoder's token grid."""
    return MASKS.get(cfg.name)(cfg, grid_size)


@MASKS.register("multiblock3d")
def build_multiblock3d(cfg: MaskConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """V-JEPA's 3-D multi-block masks, one configuration per entry of ``mask.blocks``."""
    if not cfg.blocks:
        raise ValueError("mask.blocks is empty: multiblock3d needs mask configurations")
    specs = [
        BlockSpec(
            num_blocks=b.num_blocks,
            spatial_scale=tuple(b.spatial_scale),
            temporal_scale=tuple(b.temporal_scale),
            aspect_ratio=tuple(b.aspect_ratio),
            max_temporal_keep=b.max_temporal_keep,
        )
        for b in cfg.blocks
    ]
    return MultiBlock3DMaskGenerator(
        grid_size,
        specs,
        min_keep=cfg.min_keep,
        trim_to_batch_min=cfg.trim_to_batch_min,
        reference_quirks=cfg.reference_quirks,
    )


@MASKS.register("multiblock")
def build_multiblock(cfg: MaskConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """I-JEPA's 2-D multi-block masks: one context block and ``num_targets`` targets."""
    if len(grid_size) != 2:
        raise ValueError(
            f"mask.name=multiblock samples 2-D blocks but the encoder's grid is {grid_size}; "
            "use mask=multiblock3d for video"
        )
    return MultiBlockMaskGenerator(
        grid_size=grid_size,
        context_scale=tuple(cfg.context_scale),
        target_scale=tuple(cfg.target_scale),
        aspect_ratio=tuple(cfg.aspect_ratio),
        num_targets=cfg.num_targets,
        min_keep=cfg.min_keep,
        allow_overlap=cfg.allow_overlap,
        trim_to_batch_min=cfg.trim_to_batch_min,
        reference_quirks=cfg.reference_quirks,
    )


__all__ = ["MASKS", "build_mask_generator", "build_multiblock", "build_multiblock3d"]
