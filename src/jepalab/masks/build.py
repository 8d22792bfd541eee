"""Mask generators from the ``mask.*`` config section: I-JEPA's 2-D multi-block masks
(``mask=multiblock``), the strategies of its Table 6 (``mask=rasterized|block|random``) and
V-JEPA's 3-D ones (``mask=multiblock3d``)."""

from __future__ import annotations

from jepalab.config import Mask2DConfig, Mask3DConfig, MaskConfig
from jepalab.masks.collator import MaskGenerator
from jepalab.masks.multiblock import MultiBlockMaskGenerator
from jepalab.masks.multiblock3d import BlockSpec, MultiBlock3DMaskGenerator
from jepalab.masks.strategies import (
    BlockMaskGenerator,
    RandomMaskGenerator,
    RasterizedMaskGenerator,
)
from jepalab.registry import Registry

# mask.name -> a builder ``(cfg, grid_size) -> MaskGenerator``
MASKS: Registry = Registry("mask generator", key="mask.name")


def build_mask_generator(cfg: MaskConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """The mask generator registered as ``cfg.name`` for the encoder's token grid."""
    return MASKS.get(cfg.name)(cfg, grid_size)


@MASKS.register("multiblock3d")
def build_multiblock3d(cfg: Mask3DConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
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
def build_multiblock(cfg: Mask2DConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
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


def _fixed_targets(cfg: Mask2DConfig, count: int) -> None:
    if cfg.num_targets != count:
        raise ValueError(
            f"mask.name={cfg.name} has {count} target(s) per sample by definition "
            f"(I-JEPA Table 6), got mask.num_targets={cfg.num_targets}"
        )


@MASKS.register("rasterized")
def build_rasterized(cfg: Mask2DConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """I-JEPA Table 6 "rasterized": one quadrant predicts the other three."""
    _fixed_targets(cfg, 3)
    return RasterizedMaskGenerator(grid_size)


@MASKS.register("block")
def build_block(cfg: Mask2DConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """I-JEPA Table 6 "block": one large target block, its complement the context."""
    return BlockMaskGenerator(
        grid_size,
        target_scale=tuple(cfg.target_scale),
        aspect_ratio=tuple(cfg.aspect_ratio),
        num_targets=cfg.num_targets,
        min_keep=cfg.min_keep,
    )


@MASKS.register("random")
def build_random(cfg: Mask2DConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """I-JEPA Table 6 "random": random patches are the target, the rest the context."""
    _fixed_targets(cfg, 1)
    return RandomMaskGenerator(
        grid_size, target_scale=tuple(cfg.target_scale), min_keep=cfg.min_keep
    )


__all__ = [
    "MASKS",
    "build_block",
    "build_mask_generator",
    "build_multiblock",
    "build_multiblock3d",
    "build_random",
    "build_rasterized",
]
