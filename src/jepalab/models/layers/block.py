"""Pre-norm transformer block whose attention runs through the jepalab dispatcher.

Parameter names follow timm / I-JEPA (``norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2``)
so that official checkpoints map onto it one to one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jepalab.kernels.attention import VarlenLayout, attention
from jepalab.models.layers.rope import apply_rope

Rope = tuple[Tensor, Tensor]  # (cos, sin), each (tokens, 1, head_dim); see GridRoPE


class Mlp(nn.Module):
    """The transformer MLP ``fc2(GELU(fc1(x)))`` (ViT, Dosovitskiy et al. 2021, Eq. 3); the
    parameter names are timm's ``Mlp``, so checkpoints of both load into each other."""

    def __init__(self, dim: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: Tensor, p: float, training: bool, layout: VarlenLayout | None) -> Tensor:
    """Stochastic depth (Huang et al. 2016): zero a residual branch per *sequence*.

    On packed tokens a sequence is a run of rows, so the keep decision is drawn per sequence
    and repeated over its tokens (timm's DropPath would drop single tokens here).
    """
    if p == 0.0 or not training:
        return x
    num = x.shape[0] if layout is None else layout.num_seqs
    keep = x.new_empty(num).bernoulli_(1.0 - p).div_(1.0 - p)
    if layout is not None:
        keep = keep.repeat_interleave(layout.lengths)
    return x * keep.reshape(-1, *([1] * (x.ndim - 1)))


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``max_rate`` over ``depth`` blocks."""
    return [max_rate * i / max(depth - 1, 1) for i in range(depth)]


def init_transformer_weights(module: nn.Module, blocks: nn.ModuleList, std: float = 0.02) -> None:
    """Truncated-normal init of linear/conv weights, then scale each block's residual outputs
    (``attn.proj``, ``mlp.fc2``) by ``1 / sqrt(2 * layer)``, as in I-JEPA's ViT."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for layer, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))


class Attention(nn.Module):
    """Multi-head self-attention on dense ``(B, L, C)`` or packed ``(T, C)`` tokens.

    With ``rope`` (rotary tables of the tokens, :class:`~jepalab.models.layers.GridRoPE`),
    queries and keys are rotated by their grid positions before attention (V-JEPA 2).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, backend: str = "auto"
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        layout: VarlenLayout | None = None,
        rope: Rope | None = None,
        causal_block: int | None = None,
        kv_cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Attend ``x`` to itself; with ``kv_cache`` (dense only), to the cached keys and
        values too, appending this call's to the cache (incremental decoding: the new tokens
        are the newest block of a frame-causal sequence, so they see everything)."""
        lead = x.shape[:-1]  # (B, L) dense or (T,) packed
        qkv = self.qkv(x).reshape(*lead, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(-3)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=1)
                v = torch.cat([kv_cache["v"], v], dim=1)
            kv_cache["k"], kv_cache["v"] = k, v
        out = attention(q, k, v, layout=layout, backend=self.backend, causal_block=causal_block)
        return self.proj(out.reshape(*lead, -1))


class Block(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (ViT, Dosovitskiy et al. 2021, Eq. 2-3)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        attn_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, backend=attn_backend)
        self.drop_path = drop_path
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(
        self,
        x: Tensor,
        layout: VarlenLayout | None = None,
        rope: Rope | None = None,
        causal_block: int | None = None,
        kv_cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        p, training = self.drop_path, self.training
        attn = self.attn(self.norm1(x), layout, rope, causal_block, kv_cache)
        x = x + drop_path(attn, p, training, layout)
        return x + drop_path(self.mlp(self.norm2(x)), p, training, layout)
