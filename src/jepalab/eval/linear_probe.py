"""Linear probes on frozen features (I-JEPA Sec. 5: target encoder, average-pooled patches)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried by cross-validation


@torch.no_grad()
def extract_features(
    featurize: Callable[[Tensor], Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``featurize`` over a labelled dataset; returns ``(features (n, D), labels (n,))``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    feats, labels = [], []
    for images, y in loader:
        feats.append(featurize(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def encoder_featurizer(encoder: nn.Module) -> Callable[[Tensor], Tensor]:
    """Average-pooled final patch features of an encoder, in eval mode: ``(B, D)``."""
    encoder.eval()
    return lambda images: encoder(images).mean(dim=1)


def pixel_featurizer(images: Tensor) -> Tensor:
    """Raw pixels as features: ``(B, C*H*W)``."""
    return images.flatten(1)


@dataclass
class ProbeResult:
    train_accuracy: float
    test_accuracy: float
    C: float
    cv_accuracy: float


def fit_linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    c_grid: tuple[float, ...] = C_GRID,
    seed: int = 0,
) -> ProbeResult:
    """Standardise, then multinomial logistic regression with ``C`` picked by 3-fold CV on
    the training split only; report accuracy on the held-out split."""
    (x_train, y_train), (x_test, y_test) = train, test
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    scores = {c: cross_val_score(model(c), x_train, y_train, cv=folds).mean() for c in c_grid}
    best = max(scores, key=scores.get)
    clf = model(best).fit(x_train, y_train)
    return ProbeResult(
        train_accuracy=float(clf.score(x_train, y_train)),
        test_accuracy=float(clf.score(x_test, y_test)),
        C=best,
        cv_accuracy=float(scores[best]),
    )


def format_table(rows: dict[str, ProbeResult]) -> str:
    """A plain-text table of probe results."""
    width = max(len(name) for name in rows) + 2
    lines = [f"{'features':<{width}}{'test acc':>10}{'train acc':>11}{'C':>8}"]
    lines.append("-" * len(lines[0]))
    for name, r in rows.items():
        lines.append(
            f"{name:<{width}}{100 * r.test_accuracy:>9.1f}%{100 * r.train_accuracy:>10.1f}%"
            f"{r.C:>8g}"
        )
    return "\n".join(lines)
