"""Weighted k-nearest-neighbour classification of frozen features (DINO's k-NN protocol).

Features are L2-normalised; a query's ``k`` most cosine-similar training samples vote for
their class with weight ``exp(sim / T)``, ``T = 0.07`` (Wu et al. 2018 [0], as used by
DINO [1] Sec. 4.1 and DINOv2). No parameter is trained: ``k`` is picked on a validation
part of the training split, and the test queries then search the whole training split.

[0] Wu et al. 2018, Unsupervised Feature Learning via Non-Parametric Instance Discrimination.
[1] Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers (DINO).
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
)

KNN_KS = (10, 20, 50)
KNN_TEMPERATURE = 0.07  # DINO's


@torch.no_grad()
def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    ks: tuple[int, ...] = KNN_KS,
    temperature: float = KNN_TEMPERATURE,
    leave_one_out: bool = False,
    chunk: int = 1024,
) -> dict[int, Tensor]:
    """Predicted classes ``(m,)`` of ``queries (m, D)`` for every ``k`` of ``ks``.

    ``bank (n, D)`` and ``queries`` are L2-normalised here; similarities are computed in
    chunks of ``chunk`` queries (one ``(chunk, n)`` matrix product each), and the top
    ``max(ks)`` neighbours are found once for all ``k``. A ``k`` above ``n`` uses all ``n``.
    ``leave_one_out``: ``queries`` is ``bank`` itself and each sample may not vote for itself
    (the training accuracy of a k-NN classifier).
    """
    if leave_one_out and queries.shape != bank.shape:
        raise ValueError("leave_one_out needs queries to be the bank itself")
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    available = len(bank) - int(leave_one_out)
    k_max = min(max(ks), available)
    preds: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ bank.T  # (c, n)
        if leave_one_out:
            rows = torch.arange(len(sims), device=sims.device)
            sims[rows, rows + start] = -float("inf")
        top_sims, top_idx = sims.topk(k_max, dim=1)  # sorted, most similar first
        votes = F.one_hot(bank_labels[top_idx], num_classes).to(sims.dtype)
        votes *= (top_sims / temperature).exp().unsqueeze(-1)  # (c, k_max, K)
        cumulative = votes.cumsum(1)  # the first k neighbours' votes for every k at once
        for k in ks:
            preds[k].append(cumulative[:, min(k, k_max) - 1].argmax(1))
    return {k: torch.cat(p) for k, p in preds.items()}


def fit_knn_probe(
    train: Features,
    test: Features,
    *,
    ks: tuple[int, ...] = KNN_KS,
    temperature: float = KNN_TEMPERATURE,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """k-NN classifier on pooled features ``(n, D)`` under the shared protocol
    (:mod:`jepalab.eval.protocol`).

    ``k`` is picked on a validation part (``val_fraction``) of the training split, searching
    the rest of it (the first ``k`` of ``ks`` on ties); one ``k`` is taken as it is. Test
    queries then search the whole training split (k-NN's "refit"); ``train_accuracy`` is its
    leave-one-out accuracy. Features are used as given (no standardisation, as DINO), only
    L2-normalised. ``hparams``: ``{"k": ...}``.
    """
    if not ks:
        raise ValueError("fit_knn_probe: ks is empty")
    x_train, y_train = (t.to(device) for t in checked_split(train, "train"))
    x_test, y_test = (t.to(device) for t in checked_split(test, "test"))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    options = dict(num_classes=num_classes, temperature=temperature)

    def score(fit: Tensor, val: Tensor) -> list[float]:
        fit, val = fit.to(device), val.to(device)
        preds = knn_predict(x_train[fit], y_train[fit], x_train[val], ks=ks, **options)
        return [float((preds[k] == y_train[val]).double().mean()) for k in ks]

    best, report, val_accuracy = select_on_validation(
        [{"k": k} for k in ks], len(y_train), val_fraction, seed, score
    )
    k = int(best["k"])

    def accuracy(preds: dict[int, Tensor], labels: Tensor) -> float:
        return float((preds[k] == labels).double().mean())

    return ProbeResult(
        train_accuracy=accuracy(
            knn_predict(x_train, y_train, x_train, ks=(k,), leave_one_out=True, **options),
            y_train,
        ),
        test_accuracy=accuracy(knn_predict(x_train, y_train, x_test, ks=(k,), **options), y_test),
        hparams={"k": k},
        val_accuracy=val_accuracy,
        grid=report,
    )


__all__ = ["KNN_KS", "KNN_TEMPERATURE", "fit_knn_probe", "knn_predict"]
