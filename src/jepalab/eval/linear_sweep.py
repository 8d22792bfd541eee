"""Linear probes on cached features, a whole (lr x weight decay) grid trained in one pass.

The grid's heads are one batched parameter ``W (G, D, K)`` (plus biases ``(G, K)``): every
mini-batch is read once and multiplied into all heads with one ``einsum``, so a grid of
``G`` probes costs about one probe's data movement. This is how V-JEPA [0] trains its grid
of attentive probes (all heads on the same batches), here for linear heads; DINOv2 [1]
sweeps its linear heads the same way.

This is the probe of ``jepalab eval probe`` (``probes=[linear]``). The full-batch L-BFGS
probe of :mod:`jepalab.eval.linear_probe` stays the one that ``jepalab train`` prints (its
numbers are quoted in the README); it is ``probes=[lbfgs]`` there.

[0] Bardes et al. 2024, Revisiting Feature Prediction for Learning Visual Representations
    from Video (V-JEPA), Sec. 4.
[1] Oquab et al. 2023, DINOv2: Learning Robust Visual Features without Supervision, Sec. 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.eval.linear_probe import ProbeResult, standardise
from jepalab.train.schedules import warmup_cosine

Features = tuple[Tensor | np.ndarray, Tensor | np.ndarray]

# AdamW's peak lr and decoupled weight decay. On standardised features a head starting at zero
# wants large steps: on the digits the picked lr is 0.03-0.3 and the L-BFGS probe's accuracy
# is reached within ~2 points in 100 epochs; weight decay matters for raw pixels only.
LR_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
WEIGHT_DECAY_GRID = (1e-4, 1e-2, 0.1, 1.0)
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8


@dataclass
class SweepResult(ProbeResult):
    """A :class:`ProbeResult` plus every grid point's hyper-parameters and validation
    accuracy (``grid``), in grid order; ``hparams`` is the picked point."""

    grid: list[dict[str, float]] = field(default_factory=list)


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(fit, val)`` indices of a seeded random split of ``n`` training samples; the
    validation part holds ``max(1, int(val_fraction * n))`` (as :func:`fit_linear_probe`)."""
    if n < 2:
        raise ValueError(f"a validation split needs at least 2 training samples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, int(val_fraction * n)), n - 1)
    return order[n_val:], order[:n_val]


def checked_split(split: Features, name: str, tokens: bool = False) -> tuple[Tensor, Tensor]:
    """Check and convert one split: ``(features float32, labels (n,) int64)``, the features
    pooled ``(n, D)`` or, with ``tokens``, ``(n, N, D)``."""
    x, y = torch.as_tensor(split[0], dtype=torch.float32), torch.as_tensor(split[1]).long()
    if x.ndim != (3 if tokens else 2) or y.shape != x.shape[:1]:
        expected = "features (n, N, D)" if tokens else "pooled features (n, D)"
        hint = "" if tokens else " (pool token features first)"
        raise ValueError(
            f"{name} split: expected {expected} and labels (n,), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}{hint}"
        )
    return x, y


def train_linear_heads(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    grid: list[tuple[float, float]],
    *,
    epochs: int = 100,
    batch_size: int = 256,
    warmup_epochs: float = 1.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """One softmax-regression head per ``(lr, weight_decay)`` of ``grid``, trained together
    on features ``x (n, D)`` and labels ``y (n,)``: returns ``(W (G, D, K), b (G, K))``.

    Every head starts at zero and sees the same shuffled mini-batches. AdamW (decoupled
    weight decay on ``W`` only, not on biases), per-head peak lr with a linear warmup of
    ``warmup_epochs`` then cosine decay to 0, cross-entropy. Head ``g`` follows exactly the
    trajectory it would follow if trained alone (the heads share no parameter, and each
    head's loss is its own batch mean). Shuffling depends on ``seed`` only.
    """
    if not grid:
        raise ValueError("train_linear_heads: the (lr, weight_decay) grid is empty")
    num_heads, dim = len(grid), x.shape[1]
    lr = torch.tensor([g[0] for g in grid], dtype=x.dtype, device=x.device)
    wd = torch.tensor([g[1] for g in grid], dtype=x.dtype, device=x.device)
    w = torch.zeros(num_heads, dim, num_classes, dtype=x.dtype, device=x.device)
    b = torch.zeros(num_heads, num_classes, dtype=x.dtype, device=x.device)
    params = (w.requires_grad_(), b.requires_grad_())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).to(x.device).split(batch_size):
            step += 1  # as V-JEPA's probes: the schedule steps first, no zero-lr first step
            xb, yb = x.index_select(0, idx), y[idx]
            logits = torch.einsum("bd,gdk->gbk", xb, w) + b[:, None]
            # Sum over heads of each head's mean loss: head g's gradient is its own.
            loss = F.cross_entropy(logits.flatten(0, 1), yb.repeat(num_heads)) * num_heads
            grads = torch.autograd.grad(loss, params)
            scale = warmup_cosine(step, warmup, total, 0.0, 1.0, 0.0)
            _adamw_step(params, grads, moments, lr * scale, wd, step)
    return w.detach(), b.detach()


@torch.no_grad()
def _adamw_step(params, grads, moments, lr: Tensor, wd: Tensor, step: int) -> None:
    """torch.optim.AdamW's update with one lr / weight decay per head (leading dim)."""
    beta1, beta2 = ADAMW_BETAS
    for i, (p, g, (m, v)) in enumerate(zip(params, grads, moments, strict=True)):
        head = (-1,) + (1,) * (p.ndim - 1)
        step_lr = lr.view(head)
        if i == 0:  # weights decay, biases do not
            p.mul_(1 - step_lr * wd.view(head))
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2**step)).sqrt_().add_(ADAMW_EPS)
        p.sub_(step_lr / (1 - beta1**step) * m / denom)


@torch.no_grad()
def head_accuracies(w: Tensor, b: Tensor, x: Tensor, y: Tensor, chunk: int = 4096) -> list[float]:
    """Accuracy of each head of ``(W (G, D, K), b (G, K))`` on ``x (n, D)``, ``y (n,)``."""
    correct = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
    for xb, yb in zip(x.split(chunk), y.split(chunk), strict=True):
        pred = (torch.einsum("bd,gdk->gbk", xb, w) + b[:, None]).argmax(-1)
        correct += (pred == yb).sum(1)
    return (correct.double() / len(y)).tolist()


def fit_linear_sweep(
    train: Features,
    test: Features,
    *,
    lr_grid: tuple[float, ...] = LR_GRID,
    weight_decay_grid: tuple[float, ...] = WEIGHT_DECAY_GRID,
    epochs: int = 100,
    batch_size: int = 256,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> SweepResult:
    """Linear probe on pooled features ``(n, D)``, hyper-parameters swept in one pass.

    Features are standardised per channel with statistics of the fitting part of the
    training split. All ``lr_grid x weight_decay_grid`` heads are trained together
    (:func:`train_linear_heads`) on the training split minus a validation part
    (``val_fraction``); the head with the best validation accuracy (the first in grid order
    on ties) is reported. It is *not* refitted on the whole training split: the test
    accuracy is that of the very head picked, and ``train_accuracy`` is measured on the
    part it was fitted on. Deterministic given ``seed`` (fp32).
    """
    x_train, y_train = checked_split(train, "train")
    x_test, y_test = checked_split(test, "test")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    grid = [(lr, wd) for lr in lr_grid for wd in weight_decay_grid]
    fit, val = validation_split(len(y_train), val_fraction, seed)
    x_fit, x_val, x_test = (t.to(device) for t in standardise(x_train[fit], x_train[val], x_test))
    y_fit, y_val, y_test = y_train[fit].to(device), y_train[val].to(device), y_test.to(device)
    w, b = train_linear_heads(
        x_fit, y_fit, num_classes, grid, epochs=epochs, batch_size=batch_size, seed=seed
    )
    val_acc = head_accuracies(w, b, x_val, y_val)
    best = max(range(len(grid)), key=val_acc.__getitem__)
    picked = (w[best : best + 1], b[best : best + 1])
    return SweepResult(
        train_accuracy=head_accuracies(*picked, x_fit, y_fit)[0],
        test_accuracy=head_accuracies(*picked, x_test, y_test)[0],
        hparams={"lr": grid[best][0], "weight_decay": grid[best][1]},
        val_accuracy=val_acc[best],
        grid=[
            {"lr": lr, "weight_decay": wd, "val_accuracy": acc}
            for (lr, wd), acc in zip(grid, val_acc, strict=True)
        ],
    )


__all__ = [
    "SweepResult",
    "fit_linear_sweep",
    "head_accuracies",
    "train_linear_heads",
    "validation_split",
]
