"""What every probe shares: the checked inputs, the validation split that picks its
hyper-parameters, the standardisation, and the result.

The protocol (I-JEPA Sec. 5 / scikit-learn style model selection): a probe's
hyper-parameter grid is fitted on the training split minus a seeded validation part
(``val_fraction``); the point with the best validation accuracy (the first in grid order on
ties) is fitted again on the whole training split, and that model's accuracy on the
held-out split is reported. A one-point grid needs no selection and is fitted once, on the
whole training split (``val_accuracy`` is then NaN). The test split is read for the reported
accuracy only. Every probe of :mod:`jepalab.eval` (linear, attentive, k-NN) and both
commands (``jepalab train``'s after-training probe, ``jepalab eval probe``) follow it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

Features = tuple[Tensor | np.ndarray, Tensor | np.ndarray]  # (features, labels) of one split


@dataclass
class ProbeResult:
    """A probe's accuracies and the hyper-parameters picked on validation (``{"l2": ...}``
    for the linear probe, ``{"lr": ..., "weight_decay": ...}`` for the attentive one,
    ``{"k": ...}`` for k-NN). ``train_accuracy`` is measured on the split the reported model
    was fitted on; ``grid`` holds every grid point's hyper-parameters and validation
    accuracy, in grid order (empty for a one-point grid)."""

    train_accuracy: float
    test_accuracy: float
    hparams: dict[str, float]
    val_accuracy: float
    grid: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict: a NaN ``val_accuracy`` (nothing was selected)
        becomes ``None``, since strict JSON has no NaN."""
        record = asdict(self)
        if math.isnan(record["val_accuracy"]):
            record["val_accuracy"] = None
        return record


def checked_split(
    split: Features, name: str, tokens: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Check and convert one split: ``(features in dtype, labels (n,) int64)``, the features
    pooled ``(n, D)`` or, with ``tokens``, ``(n, N, D)``."""
    x, y = torch.as_tensor(split[0]).to(dtype), torch.as_tensor(split[1]).long()
    if x.ndim != (3 if tokens else 2) or y.shape != x.shape[:1]:
        expected = "features (n, N, D)" if tokens else "pooled features (n, D)"
        hint = "" if tokens else " (pool token features first)"
        raise ValueError(
            f"{name} split: expected {expected} and labels (n,), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}{hint}"
        )
    return x, y


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(fit, val)`` indices of a seeded random split of ``n`` training samples; the
    validation part holds ``max(1, int(val_fraction * n))`` of them (at most ``n - 1``)."""
    if n < 2:
        raise ValueError(f"a validation split needs at least 2 training samples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, int(val_fraction * n)), n - 1)
    return order[n_val:], order[:n_val]


def standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Per-channel (last dim) standardisation with statistics of ``train`` only; features may
    be pooled ``(n, D)`` or tokens ``(n, N, D)``."""
    flat = train.reshape(-1, train.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def select_on_validation(
    points: list[dict[str, float]],
    n: int,
    val_fraction: float,
    seed: int,
    score: Callable[[Tensor, Tensor], list[float]],
) -> tuple[dict[str, float], list[dict[str, float]], float]:
    """The protocol's selection step: ``score(fit, val)`` gives the validation accuracy of
    every grid point fitted on the ``fit`` indices; the best point (the first on ties), the
    grid report for :attr:`ProbeResult.grid` and the best validation accuracy. A one-point
    grid is taken as it is: ``(points[0], [], nan)``, and ``score`` is not called."""
    if len(points) == 1:
        return points[0], [], float("nan")
    fit, val = validation_split(n, val_fraction, seed)
    accuracies = score(fit, val)
    best = max(range(len(points)), key=accuracies.__getitem__)
    report = [p | {"val_accuracy": a} for p, a in zip(points, accuracies, strict=True)]
    return points[best], report, accuracies[best]


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


__all__ = [
    "Features",
    "ProbeResult",
    "checked_split",
    "format_hparams",
    "format_table",
    "select_on_validation",
    "standardise",
    "validation_split",
]
