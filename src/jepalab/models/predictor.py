"""The masked-latent predictor of I-JEPA (Assran et al. 2023, Sec. 3, "Predictor") and V-JEPA
(Bardes et al. 2024, Sec. 3.2).

A narrow ViT: context features are projected to the predictor width and given their
positions; a learnable mask token plus the position of each target token stands for every
token to predict; after the blocks, the target tokens are normed and projected back to the
encoder width. Positions are sincos tables (I-JEPA, V-JEPA) or rotary (V-JEPA 2) over the
encoder's 2-D patch or 3-D tubelet grid.

Each target sequence is predicted in its own sequence ``[its context tokens, its mask
tokens]``, so targets never see each other: I-JEPA's four blocks of a sample share the
sample's context; each of V-JEPA's mask configurations has its own context and its own mask
token. All sequences of a batch are packed (see :mod:`jepalab.ragged`): a sample keeps all
its context tokens and nothing is padded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jepalab.kernels.attention import VarlenLayout
from jepalab.models.layers import (
    Block,
    GridRoPE,
    drop_path_rates,
    init_transformer_weights,
    sincos_grid,
)
from jepalab.models.registry import register_predictor
from jepalab.ragged import Ragged, lengths_to_offsets, segment_arange
from jepalab.specs import records_arguments


@records_arguments
class MaskedPredictor(nn.Module):
    """Predict target-patch features from context-patch features.

    Args:
        grid_size: the encoder's token grid, ``(H, W)`` patches or ``(T, H, W)`` tubelets.
        encoder_dim: width of the encoder features (input and output).
        embed_dim: predictor width (384 in I-JEPA and V-JEPA).
        depth: number of blocks (12 for ViT-H in I-JEPA, 6 for smaller encoders).
        num_heads: attention heads (I-JEPA uses the encoder's).
        num_mask_tokens: learnable mask tokens, one per mask configuration (V-JEPA: 2).
        pos_embed: ``"sincos"`` or ``"rope"``.
        levels: encoder levels in the features (V-JEPA 2.1, ``levels_predictor``): inputs
            and predictions are ``levels * encoder_dim`` wide, the input projection an MLP
            ``Linear -> GELU -> Linear`` through ``encoder_dim`` (its ``predictor_embed``).
        predict_context: also predict the context tokens' features through a second head,
            ``predictor_proj_context`` (V-JEPA 2.1's dense loss; :meth:`forward_dense`).
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
        num_mask_tokens: int = 1,
        pos_embed: str = "sincos",
        rope_reference_layout: bool = False,
        levels: int = 1,
        predict_context: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"predictor levels must be >= 1, got {levels}")
        if pos_embed not in ("sincos", "rope"):
            raise ValueError(f"predictor pos_embed={pos_embed!r} is not 'sincos' or 'rope'")
        if num_mask_tokens < 1:
            raise ValueError(f"num_mask_tokens must be >= 1, got {num_mask_tokens}")
        self.grid_size = tuple(int(s) for s in grid_size)
        self.num_patches = math.prod(self.grid_size)
        self.encoder_dim, self.embed_dim = encoder_dim, embed_dim
        self.levels, width = int(levels), int(levels) * encoder_dim
        self.predictor_embed: nn.Module = nn.Linear(encoder_dim, embed_dim)
        if levels > 1:  # V-JEPA 2.1 predictor.py: Linear(4D, D), GELU, Linear(D, pred_dim)
            self.predictor_embed = nn.Sequential(
                nn.Linear(width, encoder_dim), nn.GELU(), nn.Linear(encoder_dim, embed_dim)
            )
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, embed_dim))
        self.rope: GridRoPE | None = None
        if pos_embed == "sincos":
            pos = sincos_grid(embed_dim, self.grid_size)[None]
            self.register_buffer("predictor_pos_embed", pos)
        else:
            self.predictor_pos_embed = None
            self.rope = GridRoPE(
                self.grid_size, embed_dim // num_heads, reference_layout=rope_reference_layout
            )
        rates = drop_path_rates(drop_path_rate, depth)
        self.predictor_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, norm_eps, attn_backend)
            for rate in rates
        )
        self.predictor_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.predictor_proj = nn.Linear(embed_dim, width)
        self.predictor_proj_context = nn.Linear(embed_dim, width) if predict_context else None
        init_transformer_weights(self, self.predictor_blocks, init_std)
        nn.init.trunc_normal_(self.mask_tokens, std=init_std)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before V-JEPA's per-configuration mask tokens: one `mask_token`
        # of shape (1, 1, D) is `mask_tokens` (1, D)
        old = state_dict.pop(prefix + "mask_token", None)
        if old is not None and prefix + "mask_tokens" not in state_dict:
            state_dict[prefix + "mask_tokens"] = old.reshape(1, -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        context_features: Tensor,
        context: Ragged,
        targets: Ragged,
        mask_ids: Tensor | None = None,
    ) -> Tensor:
        """Predict the features of every target token.

        Args:
            context_features: ``(Tc, encoder_dim)`` packed context-encoder output.
            context: ``C`` sequences of context token indices (matching the packing above).
            targets: ``S = C * r`` sequences of target token indices; target sequence ``s``
                is predicted from context sequence ``s // r`` (I-JEPA: ``C = B`` contexts and
                ``r = 4`` blocks each; V-JEPA: one context per target, ``r = 1``).
            mask_ids: ``(S,)`` which mask token each target sequence uses (default 0).

        Returns:
            ``(Tt, levels * encoder_dim)`` predictions packed in ``targets.values`` order.
        """
        x, _, tgt_dst = self._run(context_features, context, targets, mask_ids)
        return self.predictor_proj(self.predictor_norm(x[tgt_dst]))

    def forward_dense(
        self,
        context_features: Tensor,
        context: Ragged,
        targets: Ragged,
        mask_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """V-JEPA 2.1's predictor with ``return_all_tokens``: the target predictions of
        :meth:`forward` and predictions of the context tokens' own features.

        Returns:
            ``(Tt, W)`` target predictions and ``(Tp, W)`` context predictions, ``W = levels
            * encoder_dim``: for every target sequence ``s`` in order, the tokens of its
            context ``s // r`` in ``context`` order (a context predicted alongside ``r``
            target blocks appears ``r`` times, each copy from its own sequence).
        """
        if self.predictor_proj_context is None:
            raise ValueError("this predictor was built without predict_context=True")
        x, ctx_dst, tgt_dst = self._run(context_features, context, targets, mask_ids)
        x = self.predictor_norm(x)
        return self.predictor_proj(x[tgt_dst]), self.predictor_proj_context(x[ctx_dst])

    def _run(
        self,
        context_features: Tensor,
        context: Ragged,
        targets: Ragged,
        mask_ids: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The blocks over every packed ``[context, targets]`` sequence; returns their output
        and where the context and target tokens are in it."""
        num_ctx, num_seqs = context.num_seqs, targets.num_seqs
        if num_ctx == 0 or num_seqs % num_ctx:
            raise ValueError(
                f"{num_seqs} target sequences is not a multiple of {num_ctx} context sequences"
            )
        ctx = self.predictor_embed(context_features)
        if mask_ids is None:
            tgt = self.mask_tokens[0].expand(targets.total, -1)
        else:
            # index_select, not [...]: with repeated indices the backward of advanced indexing
            # adds in a thread-dependent order on the CPU (index_put_ with accumulate), which
            # broke bit-exact resume under load
            tgt = self.mask_tokens.index_select(0, mask_ids.repeat_interleave(targets.lengths))

        # Sequence s is [context s // r, target s]; build where every token comes from and
        # where it goes in the packed predictor input, and its place in the grid.
        source = torch.arange(num_seqs, device=ctx.device) // (num_seqs // num_ctx)
        ctx_len, tgt_len = context.lengths[source], targets.lengths
        offsets = lengths_to_offsets(ctx_len + tgt_len)
        ctx_src = segment_arange(context.offsets[:-1][source], ctx_len)
        ctx_dst = segment_arange(offsets[:-1], ctx_len)
        tgt_dst = segment_arange(offsets[:-1] + ctx_len, tgt_len)
        x = ctx.new_zeros(int(offsets[-1]), self.embed_dim)
        context_tokens = ctx.index_select(0, ctx_src)  # deterministic backward (see above)
        x = x.index_copy(0, ctx_dst, context_tokens).index_copy(0, tgt_dst, tgt)
        index = context.values.new_zeros(int(offsets[-1]))
        index = index.index_copy(0, ctx_dst, context.values[ctx_src])
        index = index.index_copy(0, tgt_dst, targets.values)

        rope = None
        if self.predictor_pos_embed is not None:
            x = x + self.predictor_pos_embed[0][index]
        else:
            rope = self.rope(index)
        layout = VarlenLayout(offsets, int((ctx_len + tgt_len).max()))
        for blk in self.predictor_blocks:
            x = blk(x, layout, rope)
        return x, ctx_dst, tgt_dst


@register_predictor
def masked_vit_predictor(**kwargs) -> MaskedPredictor:
    """The I-JEPA / V-JEPA predictor; pass ``grid_size`` and ``encoder_dim`` of the encoder."""
    return MaskedPredictor(**kwargs)
