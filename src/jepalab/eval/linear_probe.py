"""Linear probes on frozen features (I-JEPA Sec. 5: target encoder, average-pooled patches)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    """Accuracies of a probe on frozen features, and the hyper-parameters picked on the
    validation part of the training split (``{"l2": ...}`` for the linear probe,
    ``{"lr": ..., "weight_decay": ...}`` for the attentive probe)."""

    train_accuracy: float
    test_accuracy: float
    hparams: dict[str, float]
    val_accuracy: float


L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)  # L2 penalties tried by cross-validation


def standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Per-channel (last dim) standardisation with statistics of ``train`` only; features may
    be pooled ``(n, D)`` or tokens ``(n, N, D)``."""
    flat = train.reshape(-1, train.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def train_logistic_regression(
    x: Tensor, y: Tensor, num_classes: int, l2: float, max_iter: int = 100
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression, full-batch L-BFGS: returns ``(W (D, K), b (K,))``."""
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(x: Tensor, y: Tensor, wb: tuple[Tensor, Tensor]) -> float:
    return float(((x @ wb[0] + wb[1]).argmax(1) == y).double().mean())


def fit_linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    l2_grid: tuple[float, ...] = L2_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ProbeResult:
    """Standardise features, then multinomial logistic regression with the L2 penalty picked
    on a validation part (``val_fraction``) of the training split only; report accuracy on
    the held-out split after refitting on the whole training split. Deterministic (float64,
    full-batch L-BFGS)."""
    x_train, y_train = torch.as_tensor(train[0], dtype=torch.float64), torch.as_tensor(train[1])
    x_test, y_test = torch.as_tensor(test[0], dtype=torch.float64), torch.as_tensor(test[1])
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(val_fraction * len(order)))
    val, fit = order[:n_val], order[n_val:]
    x_fit, x_val = standardise(x_train[fit], x_train[val])
    scores = {
        l2: _accuracy(
            x_val, y_train[val], train_logistic_regression(x_fit, y_train[fit], num_classes, l2)
        )
        for l2 in l2_grid
    }
    best = max(scores, key=scores.get)
    xs_train, xs_test = standardise(x_train, x_test)
    wb = train_logistic_regression(xs_train, y_train, num_classes, best)
    return ProbeResult(
        train_accuracy=_accuracy(xs_train, y_train, wb),
        test_accuracy=_accuracy(xs_test, y_test, wb),
        hparams={"l2": best},
        val_accuracy=scores[best],
    )


_HPARAM_ABBREVIATIONS = {"weight_decay": "wd"}


def format_hparams(hparams: dict[str, float]) -> str:
    """``{"lr": 1e-3, "weight_decay": 0.1}`` -> ``"lr=0.001 wd=0.1"``."""
    return " ".join(f"{_HPARAM_ABBREVIATIONS.get(k, k)}={v:g}" for k, v in hparams.items())


def format_table(rows: dict[str, ProbeResult]) -> str:
    """A plain-text table of probe results; the last column holds the chosen hyper-parameters,
    so linear and attentive probes can share one table."""
    width = max(len(name) for name in rows) + 2
    hparams = {name: format_hparams(r.hparams) for name, r in rows.items()}
    hwidth = max(len("hparams"), *(len(h) for h in hparams.values()))
    lines = [f"{'features':<{width}}{'test acc':>10}{'train acc':>11}  {'hparams':<{hwidth}}"]
    lines.append("-" * len(lines[0]))
    for name, r in rows.items():
        lines.append(
            f"{name:<{width}}{100 * r.test_accuracy:>9.1f}%{100 * r.train_accuracy:>10.1f}%"
            f"  {hparams[name]}"
        )
    return "\n".join(lines)
