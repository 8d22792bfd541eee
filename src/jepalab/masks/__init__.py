"""Mask samplers and collators; masks are variable-length index sets (:mod:`jepalab.ragged`)."""

from jepalab.masks.collator import MaskCollator, MaskedBatch, MaskGenerator
from jepalab.masks.multiblock import MaskBatch, MultiBlockMaskGenerator
from jepalab.masks.multiblock3d import (
    LONG_RANGE,
    SHORT_RANGE,
    BlockSpec,
    MultiBlock3DMaskGenerator,
)
from jepalab.masks.strategies import (
    BlockMaskGenerator,
    RandomMaskGenerator,
    RasterizedMaskGenerator,
)

__all__ = [
    "LONG_RANGE",
    "SHORT_RANGE",
    "BlockMaskGenerator",
    "BlockSpec",
    "MaskBatch",
    "MaskCollator",
    "MaskGenerator",
    "MaskedBatch",
    "MultiBlock3DMaskGenerator",
    "MultiBlockMaskGenerator",
    "RandomMaskGenerator",
    "RasterizedMaskGenerator",
]
