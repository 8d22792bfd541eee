"""The linear probe on frozen features (I-JEPA [0] Sec. 5: the target encoder's
average-pooled patch tokens): standardised features, multinomial logistic regression with an
L2 penalty picked on validation (:mod:`jepalab.eval.protocol`), fitted to convergence.

The objective is convex, so the probe is defined by its loss and its penalty, not by an
optimiser's lr or epochs: full-batch L-BFGS (strong-Wolfe line search) in float64 reaches the
optimum deterministically on any device. It holds the features of the training split in
float64 on ``device`` (``n x D x 8`` bytes: ImageNet's 1.28M x 1024 takes 10.5 GB).

[0] Assran et al. 2023, Self-Supervised Learning from Images with a Joint-Embedding
    Predictive Architecture (I-JEPA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.eval.protocol import (
    Features,
    ProbeResult,
    checked_split,
    select_on_validation,
    standardise,
)

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)  # penalties on sum(W^2), picked on validation
MAX_ITER = 100  # L-BFGS iterations (each with its line search)


def train_logistic_regression(
    x: Tensor, y: Tensor, num_classes: int, l2: float, max_iter: int = MAX_ITER
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression ``mean CE(x W + b, y) + l2 * sum(W^2)`` (bias not
    penalised), full-batch L-BFGS from zero: returns ``(W (D, K), b (K,))`` in ``x``'s dtype
    and device."""
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
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
    train: Features,
    test: Features,
    *,
    l2_grid: tuple[float, ...] = L2_GRID,
    max_iter: int = MAX_ITER,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """Linear probe on pooled features ``(n, D)`` under the shared protocol: every L2 penalty
    of ``l2_grid`` is fitted on the training split minus a validation part, features
    standardised with that part's statistics; the best one is fitted again on the whole
    training split (standardised with its statistics) and evaluated on ``test``.
    Deterministic (float64, full batch)."""
    if not l2_grid:
        raise ValueError("fit_linear_probe: l2_grid is empty")
    x_train, y_train = (t.to(device) for t in checked_split(train, "train", dtype=torch.float64))
    x_test, y_test = (t.to(device) for t in checked_split(test, "test", dtype=torch.float64))
    num_classes = int(max(y_train.max(), y_test.max())) + 1

    def score(fit: Tensor, val: Tensor) -> list[float]:
        fit, val = fit.to(device), val.to(device)
        x_fit, x_val = standardise(x_train[fit], x_train[val])
        return [
            _accuracy(
                x_val,
                y_train[val],
                train_logistic_regression(x_fit, y_train[fit], num_classes, l2, max_iter),
            )
            for l2 in l2_grid
        ]

    points = [{"l2": l2} for l2 in l2_grid]
    best, grid, val_accuracy = select_on_validation(points, len(y_train), val_fraction, seed, score)
    xs_train, xs_test = standardise(x_train, x_test)
    wb = train_logistic_regression(xs_train, y_train, num_classes, best["l2"], max_iter)
    return ProbeResult(
        train_accuracy=_accuracy(xs_train, y_train, wb),
        test_accuracy=_accuracy(xs_test, y_test, wb),
        hparams=best,
        val_accuracy=val_accuracy,
        grid=grid,
    )


__all__ = ["L2_GRID", "MAX_ITER", "fit_linear_probe", "train_logistic_regression"]
