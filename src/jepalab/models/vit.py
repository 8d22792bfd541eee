"""Vision Transformer encoder (Dosovitskiy et al. 2021) as used by I-JEPA (Assran et al. 2023).

The context encoder of I-JEPA sees only the visible patches: pass ``keep`` (a :class:`Ragged`
of per-sample token indices) and the encoder gathers those tokens, adds their positions and
runs every block on the packed tokens -- no token is dropped and no padding is computed.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jepalab.kernels.attention import VarlenLayout
from jepalab.models.layers import (
    Block,
    PatchEmbed,
    drop_path_rates,
    init_transformer_weights,
    sincos_2d,
)
from jepalab.models.registry import register_encoder
from jepalab.ragged import Ragged


class VisionTransformer(nn.Module):
    """ViT encoder over a patch grid with fixed 2-D sincos positions and no class token.

    Args:
        img_size: input side (or ``(H, W)``).
        patch_size: patch side; the token grid is ``img_size / patch_size``.
        in_chans: input channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer shape.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        norm_eps: LayerNorm epsilon (1e-6 in I-JEPA).
        init_std: std of the truncated-normal initialisation.
        attn_backend: backend of :func:`jepalab.kernels.attention`.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        attn_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid_size)[None])
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, norm_eps, attn_backend)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.grad_checkpointing = False
        init_transformer_weights(self, self.blocks, init_std)
        # Patch projection: Xavier-uniform over its flattened fan-in (MAE, He et al. 2022)
        # instead of I-JEPA's fixed std 0.02. With small patches and one channel (fan-in 16)
        # std 0.02 makes the content ~10x weaker than the sincos positions, and JEPA training
        # then collapses to position-only features; at ViT-H/14 (fan-in 588) both are ~0.03.
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable

    def tokens(self, x: Tensor) -> Tensor:
        """Patch tokens with positions, ``(B, C, H, W)`` -> ``(B, N, D)``."""
        return self.patch_embed(x) + self.pos_embed

    def forward(self, x: Tensor, keep: Ragged | None = None) -> Tensor:
        """Encode images.

        Args:
            x: ``(B, C, H, W)`` images.
            keep: optional per-sample indices (into the ``N`` patch grid) of the tokens the
                encoder may see, one sequence per sample.

        Returns:
            ``(B, N, D)`` features of all patches when ``keep`` is None, else ``(T, D)``
            features of the kept tokens packed in ``keep.values`` order.
        """
        tokens = self.tokens(x)
        layout = None
        if keep is not None:
            if keep.num_seqs != x.shape[0]:
                raise ValueError(f"keep has {keep.num_seqs} sequences for a batch of {x.shape[0]}")
            tokens = tokens.reshape(-1, self.embed_dim)[keep.flat_index(self.num_patches)]
            layout = VarlenLayout.from_lengths(keep.lengths)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                tokens = checkpoint(blk, tokens, layout, use_reentrant=False)
            else:
                tokens = blk(tokens, layout)
        return self.norm(tokens)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, N, D)`` features of every patch (timm-style name)."""
        return self.forward(x)


# ViT sizes (Dosovitskiy et al. 2021, Tab. 1; Touvron et al. 2021 for tiny/small).
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
}


def _vit(size: str, patch_size: int, **kwargs) -> VisionTransformer:
    return VisionTransformer(patch_size=patch_size, **{**VIT_SIZES[size], **kwargs})


def _register_vit(size: str, patch: int) -> None:
    def build(**kwargs) -> VisionTransformer:
        kwargs.setdefault("patch_size", patch)
        return _vit(size, **kwargs)

    build.__name__ = build.__qualname__ = f"vit_{size}_patch{patch}"
    build.__doc__ = f"ViT-{size.capitalize()}/{patch}: {VIT_SIZES[size]}."
    register_encoder(build)


for _size in VIT_SIZES:
    for _patch in (14, 16):
        _register_vit(_size, _patch)

__all__ = ["VIT_SIZES", "VisionTransformer"]
