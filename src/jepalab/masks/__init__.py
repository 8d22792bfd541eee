"""Mask samplers and collators; masks are variable-length index sets (:mod:`jepalab.ragged`)."""

from jepalab.masks.collator import MaskCollator, MaskedBatch
from jepalab.masks.multiblock import MaskBatch, MultiBlockMaskGenerator

__all__ = ["MaskBatch", "MaskCollator", "MaskedBatch", "MultiBlockMaskGenerator"]
