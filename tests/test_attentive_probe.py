"""The V-JEPA attentive probe: modules, the fit under the shared selection protocol, and its
contract with the linear probe (shared :class:`ProbeResult` and table)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from jepalab.eval import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttentionBlock,
    ProbeResult,
    fit_attentive_probe,
    fit_linear_probe,
    format_table,
)
from jepalab.eval.features import extract_features


@pytest.fixture(autouse=True)
def _one_thread():
    """A fit is thousands of tiny optimiser steps: intra-op threads only add synchronisation,
    and on a loaded 2-core machine spinning OpenMP workers make them 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def needle_task(n: int, num_tokens: int = 16, dim: int = 32, num_classes: int = 4, seed: int = 0):
    """Clips whose class is readable from one token only, at a random position.

    Every clip holds the codes of *all* classes, each in its own random token, and a marker
    added to the token of the true class; the other tokens are noise. The mean over tokens is
    then the same for every class (average pooling is at chance), while attention to the
    marked token reads the class.
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, num_classes + 1, generator=g))[0].T * 8.0
    codes, marker = basis[:num_classes], basis[num_classes]
    x = torch.randn(n, num_tokens, dim, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    slots = torch.rand(n, num_tokens, generator=g).argsort(1)[:, :num_classes]  # (n, K)
    rows = torch.arange(n)
    for c in range(num_classes):
        x[rows, slots[:, c]] += codes[c]
    x[rows, slots[rows, y]] += marker
    return x, y


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("num_queries", [1, 3])
def test_pooler_and_classifier_shapes(depth, num_queries):
    tokens = torch.randn(5, 7, 32)
    pooler = AttentivePooler(32, num_heads=4, num_queries=num_queries, depth=depth)
    assert pooler(tokens).shape == (5, num_queries, 32)
    assert len(pooler.blocks) == depth - 1
    assert AttentiveClassifier(32, num_classes=6, num_heads=4, depth=depth)(tokens).shape == (5, 6)


@pytest.mark.parametrize("depth", [1, 3])
def test_pooler_is_a_set_function(depth):
    """No position embeddings: permuting the tokens must not change the pooled output."""
    pooler = AttentivePooler(32, num_heads=4, num_queries=2, depth=depth).eval()
    tokens = torch.randn(4, 11, 32)
    perm = torch.randperm(11)
    torch.testing.assert_close(pooler(tokens[:, perm]), pooler(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_queries", [1, 16])
def test_folded_cross_attention_equals_projected(num_queries):
    """The fast path (key/value projections and the LayerNorm folded into the queries) is the
    same function, with the same gradients, as textbook cross-attention."""
    block = CrossAttentionBlock(32, num_heads=4)
    with torch.no_grad():  # non-trivial norm affine and biases, which the folding must handle
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    queries = torch.randn(3, num_queries, 32, requires_grad=True)
    tokens = torch.randn(3, 10, 32, requires_grad=True)
    weights = torch.randn(3, num_queries, 32)
    results = []
    for fold in (True, False):
        block.zero_grad()
        queries.grad = tokens.grad = None
        out = block.xattn(queries, tokens, norm=block.norm1, fold=fold)
        (out * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters() if p.grad is not None}
        grads.pop("xattn.kv.bias", None)  # the key bias has no effect: zero, or rounding noise
        results.append((out, queries.grad.clone(), tokens.grad.clone(), grads))
    (out_f, gq_f, gt_f, grads_f), (out_p, gq_p, gt_p, grads_p) = results
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_f, out_p, **tol)
    torch.testing.assert_close(gq_f, gq_p, **tol)
    torch.testing.assert_close(gt_f, gt_p, **tol)
    assert grads_f.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], **tol, msg=name)


def test_attentive_probe_reads_one_token_where_average_pooling_is_at_chance():
    x, y = needle_task(600)
    train, test = (x[:400], y[:400]), (x[400:], y[400:])
    # Attention starts uniform (pooled = mean, no class signal): a larger lr and more, smaller
    # steps than the defaults get it off that saddle within a few seconds.
    attentive = fit_attentive_probe(
        train, test, num_heads=8, epochs=20, batch_size=32, lr_grid=(3e-3, 1e-3)
    )
    linear = fit_linear_probe((x[:400].mean(1), y[:400]), (x[400:].mean(1), y[400:]))
    assert attentive.test_accuracy > 0.9, attentive
    assert linear.test_accuracy < 0.45, linear  # chance is 0.25
    assert set(linear.hparams) == {"l2"}


def test_fit_is_deterministic_and_selects_on_the_training_split_only():
    x, y = needle_task(300, num_tokens=8, dim=16, seed=1)
    train, test = (x[:200], y[:200]), (x[200:], y[200:])
    kwargs = dict(epochs=3, batch_size=32, lr_grid=(1e-3, 1e-4), weight_decay_grid=(0.0, 0.5))
    first = fit_attentive_probe(train, test, seed=3, **kwargs)
    again = fit_attentive_probe((x[:200].numpy(), y[:200].numpy()), test, seed=3, **kwargs)
    assert first == again
    assert (first.hparams["lr"], first.hparams["weight_decay"]) in [
        (lr, wd) for lr in kwargs["lr_grid"] for wd in kwargs["weight_decay_grid"]
    ]
    # Another test split (shuffled labels, other features) changes nothing but test accuracy.
    other_test = (torch.randn_like(x[200:]), y[200:][torch.randperm(100)])
    other = fit_attentive_probe(train, other_test, seed=3, **kwargs)
    assert (other.hparams, other.val_accuracy, other.train_accuracy) == (
        first.hparams,
        first.val_accuracy,
        first.train_accuracy,
    )


def test_the_picked_pair_is_refitted_on_the_whole_split():
    """The shared protocol: the grid is scored on validation, and the reported probe is the
    picked pair trained again on the whole training split, i.e. exactly a one-pair fit."""
    x, y = needle_task(240, num_tokens=8, dim=16, seed=2)
    train, test = (x[:160], y[:160]), (x[160:], y[160:])
    kwargs = dict(epochs=2, batch_size=32, seed=1)
    grid = fit_attentive_probe(
        train, test, lr_grid=(1e-3, 1e-4), weight_decay_grid=(0.0, 0.5), **kwargs
    )
    assert [(g["lr"], g["weight_decay"]) for g in grid.grid] == [
        (1e-3, 0.0), (1e-3, 0.5), (1e-4, 0.0), (1e-4, 0.5)
    ]  # fmt: skip
    assert grid.val_accuracy == max(g["val_accuracy"] for g in grid.grid)
    one = fit_attentive_probe(
        train,
        test,
        lr_grid=(grid.hparams["lr"],),
        weight_decay_grid=(grid.hparams["weight_decay"],),
        **kwargs,
    )
    assert one.grid == [] and one.val_accuracy != one.val_accuracy  # NaN: nothing selected
    assert (one.test_accuracy, one.train_accuracy) == (grid.test_accuracy, grid.train_accuracy)


def test_fit_rejects_pooled_features():
    x, y = torch.randn(20, 8), torch.randint(0, 2, (20,))
    with pytest.raises(ValueError, match=r"\(n, N, D\)"):
        fit_attentive_probe((x, y), (x, y))


class _TinyEncoder(nn.Module):
    """Images ``(B, 1, 8, 8)`` -> 4 tokens of width 16 ``(B, 4, 16)``, with dropout so that
    train and eval mode differ."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 16)
        self.drop = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = images.unfold(2, 4, 4).unfold(3, 4, 4).reshape(len(images), 4, 16)
        return self.drop(self.embed(patches))


def test_extract_features_runs_the_frozen_encoder_in_eval_mode():
    encoder = _TinyEncoder().train()
    images, labels = torch.randn(10, 1, 8, 8), torch.arange(10) % 3
    data = TensorDataset(images, labels)
    cached = extract_features(encoder, data, pooled=True, tokens=True, batch_size=4)
    assert cached.tokens.shape == (10, 4, 16) and cached.tokens.dtype == torch.float32
    assert torch.equal(cached.labels, labels)
    assert encoder.training  # mode restored
    with torch.no_grad():
        torch.testing.assert_close(cached.tokens, encoder.eval()(images))
        torch.testing.assert_close(cached.pooled, encoder(images).mean(1))
    with pytest.raises(ValueError, match="tokens"):
        extract_features(nn.Flatten(), data)


def test_format_table_shows_both_probe_kinds():
    table = format_table(
        {
            "mean-pooled, linear": ProbeResult(0.9, 0.5, {"l2": 1e-3}, 0.55),
            "tokens, attentive": ProbeResult(0.99, 0.95, {"lr": 1e-3, "weight_decay": 0.1}, 0.9),
        }
    )
    header, rule, linear, attentive = table.splitlines()
    assert header.split() == ["features", "test", "acc", "train", "acc", "hparams"]
    assert set(rule) == {"-"}
    assert linear.endswith("50.0%      90.0%  l2=0.001")
    assert attentive.endswith("95.0%      99.0%  lr=0.001 wd=0.1")
