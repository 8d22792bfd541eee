"""The I-JEPA masked-latent predictor (Assran et al. 2023, Sec. 3, "Predictor").

A narrow ViT: context features are projected to the predictor width and given their
positions; one learnable mask token plus the position of each target patch stands for every
token to predict; after the blocks, the target tokens are normed and projected back to the
encoder width.

As in the reference, each target block is predicted in its own sequence
``[context tokens of the sample, mask tokens of the block]``, so blocks never see each other.
All sequences of a batch are packed (see :mod:`jepalab.ragged`): a sample keeps all its
context tokens and nothing is padded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jepalab.kernels.attention import VarlenLayout
from jepalab.models.layers import Block, drop_path_rates, init_transformer_weights, sincos_2d
from jepalab.models.registry import register_predictor
from jepalab.ragged import Ragged, lengths_to_offsets, segment_arange


class MaskedPredictor(nn.Module):
    """Predict target-patch features from context-patch features.

    Args:
        grid_size: the encoder's patch grid ``(H, W)``.
        encoder_dim: width of the encoder features (input and output).
        embed_dim: predictor width (384 in I-JEPA).
        depth: number of blocks (12 for ViT-H in I-JEPA, 6 for smaller encoders).
        num_heads: attention heads (I-JEPA uses the encoder's).
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        embed_dim: int = 384,
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
        self.grid_size = tuple(grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.encoder_dim, self.embed_dim = encoder_dim, embed_dim
        self.predictor_embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("predictor_pos_embed", sincos_2d(embed_dim, self.grid_size)[None])
        rates = drop_path_rates(drop_path_rate, depth)
        self.predictor_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, norm_eps, attn_backend)
            for rate in rates
        )
        self.predictor_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.predictor_proj = nn.Linear(embed_dim, encoder_dim)
        init_transformer_weights(self, self.predictor_blocks, init_std)
        nn.init.trunc_normal_(self.mask_token, std=init_std)

    def forward(self, context_features: Tensor, context: Ragged, targets: Ragged) -> Tensor:
        """Predict the features of every target token.

        Args:
            context_features: ``(Tc, encoder_dim)`` packed context-encoder output.
            context: ``B`` sequences of context token indices (matching the packing above).
            targets: ``B * M`` sequences of target token indices, ``M`` blocks per sample,
                ordered sample-major (sequence ``b * M + m``).

        Returns:
            ``(Tt, encoder_dim)`` predictions packed in ``targets.values`` order.
        """
        batch, num_seqs = context.num_seqs, targets.num_seqs
        if batch == 0 or num_seqs % batch:
            raise ValueError(f"{num_seqs} target sequences is not a multiple of batch {batch}")
        pos = self.predictor_pos_embed[0]
        ctx = self.predictor_embed(context_features) + pos[context.values]
        tgt = self.mask_token[0] + pos[targets.values]

        # Sequence s = (b, m) is [context of sample b, target block s]; build where every
        # token comes from and where it goes in the packed predictor input.
        sample = torch.arange(num_seqs, device=ctx.device) // (num_seqs // batch)
        ctx_len, tgt_len = context.lengths[sample], targets.lengths
        offsets = lengths_to_offsets(ctx_len + tgt_len)
        ctx_src = segment_arange(context.offsets[:-1][sample], ctx_len)
        ctx_dst = segment_arange(offsets[:-1], ctx_len)
        tgt_dst = segment_arange(offsets[:-1] + ctx_len, tgt_len)
        x = ctx.new_zeros(int(offsets[-1]), self.embed_dim)
        x = x.index_copy(0, ctx_dst, ctx[ctx_src]).index_copy(0, tgt_dst, tgt)

        layout = VarlenLayout(offsets, int((ctx_len + tgt_len).max()))
        for blk in self.predictor_blocks:
            x = blk(x, layout)
        return self.predictor_proj(self.predictor_norm(x[tgt_dst]))


@register_predictor
def masked_vit_predictor(**kwargs) -> MaskedPredictor:
    """The I-JEPA predictor; pass ``grid_size`` and ``encoder_dim`` of the encoder."""
    return MaskedPredictor(**kwargs)
