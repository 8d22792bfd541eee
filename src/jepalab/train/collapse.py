"""Collapse monitors: cheap statistics of embeddings that fall when a JEPA collapses.

A joint-embedding model can minimise its loss by mapping every input to the same point
(complete collapse) or to a low-dimensional subspace (dimensional collapse). These statistics
expose both while training runs (the Trainer logs them every ``trainer.monitor_every`` steps):

- :func:`rankme`: the effective rank of the embedding covariance (Garrido et al. 2023,
  "RankMe: Assessing the Downstream Performance of Pretrained Self-Supervised Representations
  by Their Rank", Eq. 1): ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / ||s||_1 + eps`` over
  the singular values ``s`` of the centred embeddings. An isotropic Gaussian of dimension D
  gives ~D; a rank-1 set gives 1.
- :func:`feature_std`: the mean per-dimension standard deviation of L2-normalised embeddings,
  times ``sqrt(D)`` (SimSiam, Chen & He 2021, Sec. 4.1 uses the unscaled value, ``1/sqrt(D)``
  for isotropic outputs): ~1 for spread-out embeddings, 0 under complete collapse.
- :func:`mean_pairwise_cosine`: the mean cosine similarity between different samples; ~0 for
  spread-out embeddings, 1 under complete collapse.
- :func:`prediction_errors`: the predictor's L1 error against its targets per group of target
  tokens (per mask configuration: V-JEPA's short- and long-range masks; teacher forcing vs
  rollout for the action-conditioned model).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.methods.base import MonitorInputs

log = logging.getLogger(__name__)

MAX_TOKENS = 4096  # token-level statistics use at most this many (evenly strided) tokens


def _strided(x: Tensor, limit: int = MAX_TOKENS) -> Tensor:
    """At most ``limit`` rows of ``x``, evenly strided (deterministic: no RNG is consumed, so
    monitoring never changes a run)."""
    if x.shape[0] <= limit:
        return x
    return x[:: math.ceil(x.shape[0] / limit)]


@torch.no_grad()
def rankme(embeddings: Tensor | np.ndarray, center: bool = True, eps: float = 1e-7) -> float:
    """RankMe effective rank of ``(n, D)`` embeddings (Garrido et al. 2023, Eq. 1), between 1
    and ``min(n, D)``.

    ``center=True`` (the monitors' choice) takes the rank of the embedding covariance: the
    mean is removed first, so a large shared component (common at initialisation, where
    average-pooled features of different images point the same way) does not read as
    collapse. ``center=False`` is the paper's statistic on the raw embeddings. ``embeddings``
    may be a tensor or a numpy array.
    """
    embeddings = torch.as_tensor(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"rankme expects (n, D) embeddings, got shape {tuple(embeddings.shape)}")
    x = embeddings.detach().float()
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= 0:
        return 1.0  # all equal: completely collapsed
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def feature_std(embeddings: Tensor) -> float:
    """Mean per-dimension std of L2-normalised ``(n, D)`` embeddings, times ``sqrt(D)``."""
    z = F.normalize(embeddings.detach().float(), dim=-1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[-1]))


@torch.no_grad()
def mean_pairwise_cosine(embeddings: Tensor) -> float:
    """Mean cosine similarity over all pairs of different rows of ``(n, D)``."""
    n = embeddings.shape[0]
    if n < 2:
        return float("nan")
    z = F.normalize(embeddings.detach().float(), dim=-1)
    total = z.sum(0)
    # sum_{i != j} z_i . z_j = |sum z|^2 - sum |z_i|^2
    off_diagonal = total.dot(total) - z.square().sum()
    return float(off_diagonal / (n * (n - 1)))


@torch.no_grad()
def prediction_errors(
    predictions: Tensor, targets: Tensor, groups: Tensor | None, group_names: Sequence[str]
) -> dict[str, float]:
    """Mean L1 error per group (``{name: error}``). Without ``groups`` every prediction is in
    one group, named ``group_names[0]`` if given, else ``"all"``."""
    err = (predictions.detach().float() - targets.detach().float()).abs().mean(-1)
    if groups is None or not group_names:
        return {group_names[0] if group_names else "all": float(err.mean())}
    sums = err.new_zeros(len(group_names)).index_add_(0, groups, err)
    counts = torch.bincount(groups, minlength=len(group_names))
    return {name: float(sums[i] / counts[i]) for i, name in enumerate(group_names) if counts[i] > 0}


def collapse_metrics(inputs: MonitorInputs, prefix: str = "monitor/") -> dict[str, float]:
    """Every statistic of this module for one batch, as loggable scalars."""
    emb = inputs.embeddings.detach()
    out = {
        "rankme": rankme(emb),
        "rankme_max": float(min(emb.shape)),
        "feature_std": feature_std(emb),
        "cosine": mean_pairwise_cosine(emb),
    }
    if inputs.tokens is not None:
        tokens = _strided(inputs.tokens.detach().reshape(-1, inputs.tokens.shape[-1]))
        out["rankme_tokens"] = rankme(tokens)
        out["feature_std_tokens"] = feature_std(tokens)
    if inputs.predictions is not None and inputs.targets is not None:
        errors = prediction_errors(
            inputs.predictions, inputs.targets, inputs.groups, inputs.group_names
        )
        out.update({f"pred_error/{name}": value for name, value in errors.items()})
    return {prefix + key: value for key, value in out.items()}


class CollapseMonitor:
    """Computes :func:`collapse_metrics` and warns when the sample-level RankMe falls below
    ``rank_warning`` times its maximum ``min(n, D)`` (once per fall; again after recovery).

    Args:
        rank_warning: fraction of the maximal rank below which to warn; 0 disables it.
    """

    def __init__(self, rank_warning: float = 0.05) -> None:
        if not 0.0 <= rank_warning < 1.0:
            raise ValueError(f"trainer.rank_warning must be in [0, 1), got {rank_warning}")
        self.rank_warning = rank_warning
        self.low = False

    def __call__(self, inputs: MonitorInputs, step: int) -> dict[str, float]:
        metrics = collapse_metrics(inputs)
        threshold = self.rank_warning * metrics["monitor/rankme_max"]
        low = metrics["monitor/rankme"] < threshold
        if low and not self.low:
            log.warning(
                "step %d: embedding rank (RankMe) %.2f is below %.2f (trainer.rank_warning="
                "%g of the maximum %d): the representation may be collapsing; mean cosine "
                "between samples %.3f, feature std %.3f",
                step,
                metrics["monitor/rankme"],
                threshold,
                self.rank_warning,
                int(metrics["monitor/rankme_max"]),
                metrics["monitor/cosine"],
                metrics["monitor/feature_std"],
            )
        self.low = low
        metrics["monitor/rank_low"] = float(low)
        return metrics
