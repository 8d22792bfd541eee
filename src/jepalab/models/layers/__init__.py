"""Building blocks shared by the encoders and predictors."""

from jepalab.models.layers.block import (
    Attention,
    Block,
    drop_path,
    drop_path_rates,
    init_transformer_weights,
)
from jepalab.models.layers.patch_embed import PatchEmbed
from jepalab.models.layers.pos_embed import sincos_1d, sincos_2d

__all__ = [
    "Attention",
    "Block",
    "drop_path",
    "drop_path_rates",
    "init_transformer_weights",
    "PatchEmbed",
    "sincos_1d",
    "sincos_2d",
]
