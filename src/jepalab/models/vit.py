"""Vision Transformer encoder (Dosovitskiy et al. 2021) for images (I-JEPA, Assran et al.
2023) and videos (V-JEPA, Bardes et al. 2024; V-JEPA 2, Assran et al. 2025).

One encoder family: ``num_frames == 1`` embeds ``(B, C, H, W)`` images into a 2-D patch grid,
``num_frames > 1`` embeds ``(B, C, T, H, W)`` clips into a 3-D grid of tubelets. Positions are
fixed sincos tables added to the tokens (I-JEPA, V-JEPA) or rotary embeddings applied to
queries and keys in every block (V-JEPA 2); either way they are looked up by token index.

The context encoder sees only the visible tokens: pass ``keep`` (a :class:`Ragged` of token
indices, one or more sequences per sample) and the encoder gathers those tokens with their
positions and runs every block on the packed tokens -- no token is dropped and no padding is
computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jepalab.kernels.attention import VarlenLayout
from jepalab.models.layers import (
    Block,
    GridRoPE,
    PatchEmbed,
    TubeletEmbed,
    drop_path_rates,
    init_transformer_weights,
    sincos_grid,
)
from jepalab.models.registry import register_encoder
from jepalab.ragged import Ragged
from jepalab.specs import records_arguments

POS_EMBEDS = ("sincos", "rope")


@records_arguments
class VisionTransformer(nn.Module):
    """ViT encoder over a patch (or tubelet) grid, without a class token.

    Args:
        img_size: input side (or ``(H, W)``).
        patch_size: patch side; the token grid is ``img_size / patch_size``.
        in_chans: input channels.
        num_frames: frames per clip; ``1`` for images, ``> 1`` switches to tubelets.
        tubelet_size: frames per tubelet (video only; V-JEPA: 2).
        pos_embed: ``"sincos"`` (fixed, added to the tokens) or ``"rope"`` (rotary, per head).
        rope_reference_layout: reproduce V-JEPA 2's rotary channel layout (for its weights).
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
        num_frames: int = 1,
        tubelet_size: int = 2,
        pos_embed: str = "sincos",
        rope_reference_layout: bool = False,
    ) -> None:
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r} is not one of {POS_EMBEDS}")
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        if num_frames > 1:
            self.patch_embed = TubeletEmbed(
                img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim
            )
        else:
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid_size: tuple[int, ...] = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.pos_embed_kind = pos_embed
        self.rope: GridRoPE | None = None
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_grid(embed_dim, self.grid_size)[None])
        else:
            self.pos_embed = None
            self.rope = GridRoPE(
                self.grid_size, embed_dim // num_heads, reference_layout=rope_reference_layout
            )
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
        """Patch tokens (with additive positions), ``(B, C, [T,] H, W)`` -> ``(B, N, D)``."""
        tokens = self.patch_embed(x)
        return tokens if self.pos_embed is None else tokens + self.pos_embed

    def patchify(self, x: Tensor) -> Tensor:
        """Raw pixels in the token grid: ``(B, N, C * [t *] p * p)``, token order."""
        return self.patch_embed.patchify(x)

    def forward(
        self,
        x: Tensor,
        keep: Ragged | None = None,
        last_layers: int = 1,
        levels: Sequence[int] | None = None,
    ) -> Tensor:
        """Encode images or clips.

        Args:
            x: ``(B, C, H, W)`` images or ``(B, C, T, H, W)`` clips.
            keep: optional indices (into the ``N`` tokens of the grid) of the tokens the
                encoder may see: ``k * B`` sequences, sequence ``b * k + j`` from sample ``b``
                (``k > 1`` when each sample has several contexts, e.g. V-JEPA's masks).
            last_layers: ``1``: the final (normed) features; ``L > 1``: the mean of the last
                ``L`` blocks' outputs, each layer-normed without affine (data2vec's targets,
                Baevski et al. 2022, Sec. 3.3; an I-JEPA target ablation).
            levels: block indices (:func:`distillation_levels`) whose outputs are returned
                side by side, ``(..., len(levels) * D)``: V-JEPA 2.1's multi-level features.
                Each is layer-normed; the last block through the encoder's own final norm,
                the others without affine (V-JEPA 2.1 gives each a learnable LayerNorm,
                ``norms_block``; here they have no parameters, so checkpoints keep their keys).

        Returns:
            ``(B, N, D)`` features of all tokens when ``keep`` is None, else ``(T, D)``
            features of the kept tokens packed in ``keep.values`` order.
        """
        if not 1 <= last_layers <= len(self.blocks):
            raise ValueError(f"last_layers={last_layers} must be in 1..{len(self.blocks)}")
        if levels is not None and (
            not levels or min(levels) < 0 or max(levels) >= len(self.blocks)
        ):
            raise ValueError(
                f"levels={list(levels)} must be block indices in 0..{len(self.blocks) - 1}"
            )
        tokens = self.tokens(x)
        layout, index = None, None
        if keep is not None:
            batch = x.shape[0]
            if keep.num_seqs == 0 or keep.num_seqs % batch:
                raise ValueError(
                    f"keep has {keep.num_seqs} sequences, not a multiple of the batch {batch}"
                )
            index = keep.flat_index(self.num_patches, seqs_per_row=keep.num_seqs // batch)
            # index_select: a deterministic backward when contexts share tokens (indexing
            # with repeated indices accumulates in a thread-dependent order on the CPU)
            tokens = tokens.reshape(-1, self.embed_dim).index_select(0, index)
            layout, index = VarlenLayout.from_lengths(keep.lengths), keep.values
        rope = None if self.rope is None else self.rope(index)
        first_averaged = len(self.blocks) - last_layers
        average = None
        wanted = set(levels or ())
        outputs: list[Tensor] = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training:
                tokens = checkpoint(blk, tokens, layout, rope, use_reentrant=False)
            else:
                tokens = blk(tokens, layout, rope)
            if last_layers > 1 and i >= first_averaged:
                normed = F.layer_norm(tokens, (self.embed_dim,))
                average = normed if average is None else average + normed
            if i in wanted:
                last = i == len(self.blocks) - 1
                outputs.append(
                    self.norm(tokens) if last else F.layer_norm(tokens, (self.embed_dim,))
                )
        if levels is not None:
            return torch.cat(outputs, dim=-1)
        if average is not None:
            return average / last_layers
        return self.norm(tokens)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, N, D)`` features of every patch (timm-style name)."""
        return self.forward(x)


# V-JEPA 2.1's encoder levels for 4 outputs (vision_transformer.py, VisionTransformer.__init__)
_LEVEL_TABLE = {(12, 4): (2, 5, 8, 11), (24, 4): (5, 11, 17, 23), (40, 4): (9, 19, 29, 39),
                (48, 4): (11, 23, 37, 47)}  # fmt: skip


def distillation_levels(depth: int, count: int) -> list[int]:
    """The ``count`` blocks whose outputs V-JEPA 2.1 supervises (``n_output_distillation``):
    its table where it has one (depth 12, 24, 40, 48 with 4 levels), else ``count`` evenly
    spaced blocks ending with the last, ``(k + 1) * depth // count - 1``, which is the table's
    rule for 12, 24 and 40."""
    if not 1 <= count <= depth:
        raise ValueError(f"method.dense_levels={count} must be in 1..{depth} (the encoder depth)")
    if (depth, count) in _LEVEL_TABLE:
        return list(_LEVEL_TABLE[depth, count])
    return [(k + 1) * depth // count - 1 for k in range(count)]


# ViT sizes (Dosovitskiy et al. 2021, Tab. 1; Touvron et al. 2021 for tiny/small; giant as
# in I-JEPA / V-JEPA ``vit_giant``: width 1408, MLP 48/11 = 6144 wide. V-JEPA 2's ViT-g is
# this size with 22 heads, ``num_heads=22``).
VIT_SIZES: dict[str, dict[str, float]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
    "giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
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

__all__ = ["POS_EMBEDS", "VIT_SIZES", "VisionTransformer", "distillation_levels"]
