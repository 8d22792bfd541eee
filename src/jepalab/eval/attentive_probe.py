"""Attentive probes on frozen token features (V-JEPA frozen evaluation).

V-JEPA [0] (Sec. 4) evaluates a frozen encoder with a cross-attention block whose learnable
query attends over all its patch tokens, then a linear classifier; V-JEPA 2 [1] puts three
self-attention blocks over the tokens first (``depth=4``, 16 heads). Unlike average pooling,
the probe can read a feature that lives in a few tokens only.

Parameter names follow the official ``AttentivePooler`` / ``AttentiveClassifier``
(``query_tokens``, ``blocks``, ``cross_attention_block.{norm1,xattn.{q,kv,proj},norm2,mlp}``,
``linear``) so that their probe checkpoints map onto these modules one to one.

[0] Bardes et al. 2024, Revisiting Feature Prediction for Learning Visual Representations
    from Video (V-JEPA).
[1] Assran et al. 2025, V-JEPA 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepalab.config import EvalConfig
from jepalab.eval.protocol import (
    Features,
    ProbeResult,
    checked_split,
    select_on_validation,
    standardise,
)
from jepalab.kernels.attention import attention
from jepalab.models.layers import Block, init_transformer_weights
from jepalab.models.layers.block import Mlp
from jepalab.train.optim import build_adamw
from jepalab.train.schedules import warmup_cosine

DEFAULTS = EvalConfig()  # the probe's defaults are written once: eval.attentive_* of the config
NORM_EPS = 1e-5  # nn.LayerNorm's default, used by the official probes


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``(B, M, D)`` over tokens ``(B, N, D)`` -> ``(B, M, D)``.

    ``q`` projects the queries, ``kv`` the tokens, ``proj`` the concatenated heads. With few
    queries (``M * H < D + M``, the probe's case) the same function is computed without
    projecting the ``N`` tokens: the key projection is folded into the queries and the value
    projection applied after pooling (see :meth:`_folded`): about ``D / H`` times fewer FLOPs,
    and no ``(B, N, D)`` gradient at all when the tokens are frozen features.
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
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        queries: Tensor,
        tokens: Tensor,
        norm: nn.LayerNorm | None = None,
        fold: bool | None = None,
    ) -> Tensor:
        """Attention of ``queries`` over ``norm(tokens)``; ``fold=None`` picks the cheaper of
        the two (equal) computations."""
        b, m, d = queries.shape
        if fold is None:
            fold = m * self.num_heads < d + m
        if fold:
            out = self._folded(queries, tokens, norm)
        else:
            out = self._projected(queries, tokens if norm is None else norm(tokens))
        return self.proj(out.reshape(b, m, d))

    def _projected(self, queries: Tensor, tokens: Tensor) -> Tensor:
        """Textbook cross-attention: ``(B, M, H, Dh)`` heads."""
        b, m, _ = queries.shape
        q = self.q(queries).reshape(b, m, self.num_heads, self.head_dim)
        k, v = self.kv(tokens).reshape(*tokens.shape[:2], 2, self.num_heads, -1).unbind(2)
        return attention(q, k, v, backend=self.backend)

    def _folded(self, queries: Tensor, tokens: Tensor, norm: nn.LayerNorm | None) -> Tensor:
        """The same heads at ``O(M H N D)`` instead of ``O(N D^2)``, exactly, because

        * ``q_h . (W_kh t + b_kh) = (W_kh^T q_h) . t + q_h . b_kh`` and the last term is the
          same for every token, so the softmax ignores it;
        * ``sum_n a_n (W_vh t_n + b_vh) = W_vh (sum_n a_n t_n) + b_vh`` as the weights sum to 1;
        * ``norm``'s affine map is folded into ``W``, ``b`` the same way, so nothing of size
          ``(B, N, D)`` needs a gradient when the tokens are frozen features.

        Each (query, head) pair becomes one single-head query of width ``D`` over the
        (normalised) tokens, still through the attention dispatcher.
        """
        b, m, d = queries.shape
        h, dh = self.num_heads, self.head_dim
        weight, bias = self.kv.weight, self.kv.bias
        if norm is not None:  # W (g * t + beta) + b = (W * g) t + (W beta + b)
            # Unit weights instead of None: the CPU kernel without them is several times slower.
            unit = tokens.new_ones(d)
            tokens = F.layer_norm(tokens, (d,), unit, torch.zeros_like(unit), norm.eps)
            if norm.bias is not None:
                bias = weight @ norm.bias + (0.0 if bias is None else bias)
            if norm.weight is not None:
                weight = weight * norm.weight
        w_k, w_v = weight.reshape(2, h, dh, d).unbind(0)
        q = self.q(queries).reshape(b, m, h, dh)
        q_tokens = torch.einsum("bmhe,hed->bmhd", q, w_k).reshape(b, m * h, 1, d)
        t = tokens.unsqueeze(2)  # (B, N, 1, D): one head of width D
        pooled = attention(q_tokens, t, t, backend=self.backend, scale=dh**-0.5)
        out = torch.einsum("bmhd,hed->bmhe", pooled.reshape(b, m, h, d), w_v)
        return out if bias is None else out + bias[d:].reshape(h, dh)


class CrossAttentionBlock(nn.Module):
    """``x = q + CrossAttn(q, LN(tokens))`` then ``x + MLP(LN(x))``; the queries are not
    normalised (as in the official probe)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.xattn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        x = queries + self.xattn(queries, tokens, norm=self.norm1)
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    """Pool tokens ``(B, N, D)`` into ``(B, num_queries, D)`` with learnable queries.

    ``depth - 1`` self-attention :class:`~jepalab.models.layers.Block` s run over the tokens,
    then one :class:`CrossAttentionBlock` (V-JEPA [0] uses ``depth=1``, V-JEPA 2 [1]
    ``depth=4``). Without position embeddings it is a set function of the tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_queries: int = 1,
        depth: int = 1,
        mlp_ratio: float = 4.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (the cross-attention block), got {depth}")
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, norm_eps=NORM_EPS) for _ in range(depth - 1)
        )
        self.cross_attention_block = CrossAttentionBlock(dim, num_heads, mlp_ratio)
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        init_transformer_weights(self, self.blocks, std=init_std)
        # The official init divides the cross block's fc2 like the last self-attention block's.
        with torch.no_grad():
            self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * max(depth - 1, 1)))

    def forward(self, tokens: Tensor) -> Tensor:
        for blk in self.blocks:
            tokens = blk(tokens)
        queries = self.query_tokens.expand(tokens.shape[0], -1, -1)
        return self.cross_attention_block(queries, tokens)


class AttentiveClassifier(nn.Module):
    """:class:`AttentivePooler` with one query, then ``Linear(D, num_classes)``:
    tokens ``(B, N, D)`` -> logits ``(B, num_classes)``."""

    def __init__(
        self, dim: int, num_classes: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.pooler = AttentivePooler(dim, num_heads, depth=depth, mlp_ratio=mlp_ratio)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.linear(self.pooler(tokens)[:, 0])


def train_attentive_classifiers(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    grid: list[tuple[float, float]],
    *,
    num_heads: int = 4,
    depth: int = 1,
    epochs: int = 20,
    batch_size: int = 128,
    seed: int = 0,
) -> list[AttentiveClassifier]:
    """One :class:`AttentiveClassifier` per ``(lr, weight_decay)`` of ``grid``, trained
    together on tokens ``x (n, N, D)`` (on the device the classifiers should live on) and
    labels ``y (n,)``, as V-JEPA trains its grid of probes: every probe sees the same batches
    (gathered once) and starts from the same init.

    AdamW, 1-epoch linear warmup then cosine decay to 0, cross-entropy. Init and shuffling
    depend on ``seed`` only; the global RNG is left untouched.
    """
    models, optimisers = [], []
    for lr, weight_decay in grid:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AttentiveClassifier(x.shape[-1], num_classes, num_heads, depth)
        models.append(model.to(x.device).train())
        optimisers.append(build_adamw(model, lr, weight_decay))
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).to(x.device).split(batch_size):
            step += 1  # the schedule steps before the update, as V-JEPA's: no zero-lr first step
            xb, yb = x.index_select(0, idx), y[idx]  # faster than x[idx] on CPU
            for model, opt, (lr, _) in zip(models, optimisers, grid, strict=True):
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine(step, steps_per_epoch, total, 0.0, lr, 0.0)
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return [model.eval() for model in models]


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    correct = sum(
        int((model(xb).argmax(1) == yb).sum())
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
    )
    return correct / len(y)


def fit_attentive_probe(
    train: Features,
    test: Features,
    *,
    num_heads: int = DEFAULTS.attentive_heads,
    depth: int = DEFAULTS.attentive_depth,
    epochs: int = DEFAULTS.attentive_epochs,
    batch_size: int = DEFAULTS.attentive_batch_size,
    lr_grid: tuple[float, ...] = tuple(DEFAULTS.attentive_lr),
    weight_decay_grid: tuple[float, ...] = tuple(DEFAULTS.attentive_weight_decay),
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """V-JEPA's attentive probe on tokens ``(n, N, D)`` under the shared protocol
    (:mod:`jepalab.eval.protocol`).

    The probes of the ``lr_grid x weight_decay_grid`` grid are trained together
    (:func:`train_attentive_classifiers`) on the training split minus a validation part,
    tokens standardised per channel with that part's statistics; the pair with the best
    validation accuracy is trained again on the whole training split (standardised with its
    statistics) and evaluated on ``test``. A one-pair grid is trained once, on the whole
    training split. The defaults are ``jepalab train``'s (``eval.attentive_*``).
    Deterministic given ``seed`` (fp32).
    """
    grid = [(lr, wd) for lr in lr_grid for wd in weight_decay_grid]
    if not grid:
        raise ValueError("fit_attentive_probe: lr_grid and weight_decay_grid must not be empty")
    x_train, y_train = (t.to(device) for t in checked_split(train, "train", tokens=True))
    x_test, y_test = (t.to(device) for t in checked_split(test, "test", tokens=True))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    options = dict(num_heads=num_heads, depth=depth, epochs=epochs, batch_size=batch_size)

    def score(fit: Tensor, val: Tensor) -> list[float]:
        fit, val = fit.to(device), val.to(device)
        x_fit, x_val = standardise(x_train[fit], x_train[val])
        probes = train_attentive_classifiers(
            x_fit, y_train[fit], num_classes, grid, seed=seed, **options
        )
        return [_accuracy(p, x_val, y_train[val], batch_size) for p in probes]

    points = [{"lr": lr, "weight_decay": wd} for lr, wd in grid]
    best, report, val_accuracy = select_on_validation(
        points, len(y_train), val_fraction, seed, score
    )
    xs_train, xs_test = standardise(x_train, x_test)
    (model,) = train_attentive_classifiers(
        xs_train, y_train, num_classes, [(best["lr"], best["weight_decay"])], seed=seed, **options
    )
    return ProbeResult(
        train_accuracy=_accuracy(model, xs_train, y_train, batch_size),
        test_accuracy=_accuracy(model, xs_test, y_test, batch_size),
        hparams=best,
        val_accuracy=val_accuracy,
        grid=report,
    )


__all__ = [
    "AttentiveClassifier",
    "AttentivePooler",
    "CrossAttention",
    "CrossAttentionBlock",
    "fit_attentive_probe",
    "train_attentive_classifiers",
]
