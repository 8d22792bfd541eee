"""Building blocks shared by the encoders and predictors."""

from jepalab.models.layers.block import (
    Attention,
    Block,
    Rope,
    drop_path,
    drop_path_rates,
    init_transformer_weights,
)
from jepalab.models.layers.patch_embed import PatchEmbed, TubeletEmbed
from jepalab.models.layers.pos_embed import sincos_1d, sincos_2d, sincos_3d, sincos_grid
from jepalab.models.layers.rope import GridRoPE, apply_rope, rope_angles

__all__ = [
    "Attention",
    "Rope",
    "Block",
    "drop_path",
    "drop_path_rates",
    "init_transformer_weights",
    "GridRoPE",
    "PatchEmbed",
    "TubeletEmbed",
    "apply_rope",
    "rope_angles",
    "sincos_1d",
    "sincos_2d",
    "sincos_3d",
    "sincos_grid",
]
