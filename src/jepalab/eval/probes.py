"""The probes of ``jepalab eval probe`` as a registry: each fits on the cached features of a
labelled training split (:class:`~jepalab.eval.features.CachedFeatures`) under the shared
protocol (:mod:`jepalab.eval.protocol`) and reports its accuracy on the test split. A new
probe is one function registered here with what it reads:

>>> @register_probe("nearest_mean", reads="pooled")
... def nearest_mean(train, test, options, device, val_fraction, seed) -> ProbeResult: ...

``options`` is the probe's section of the command's arguments (``linear=``, ``knn=``,
``attentive=``; ``None`` for a probe without one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from jepalab.eval.attentive_probe import fit_attentive_probe
from jepalab.eval.features import CachedFeatures
from jepalab.eval.knn import fit_knn_probe
from jepalab.eval.linear_probe import fit_linear_probe
from jepalab.eval.protocol import ProbeResult
from jepalab.registry import Registry

Fit = Callable[[CachedFeatures, CachedFeatures, Any, torch.device, float, int], ProbeResult]


@dataclass(frozen=True)
class Probe:
    """A registered probe: what it reads (``pooled``: one vector per sample; ``tokens``: all
    of them) and its fit ``(train, test, options, device, val_fraction, seed) -> result``."""

    reads: Literal["pooled", "tokens"]
    fit: Fit


PROBES: Registry = Registry("probe", key="probes")


def register_probe(name: str, reads: Literal["pooled", "tokens"]) -> Callable[[Fit], Fit]:
    """Register ``fit`` as probe ``name`` reading ``reads`` features."""
    if reads not in ("pooled", "tokens"):
        raise ValueError(f"probe {name!r}: reads={reads!r} must be 'pooled' or 'tokens'")

    def add(fit: Fit) -> Fit:
        PROBES.register(name)(Probe(reads, fit))
        return fit

    return add


@register_probe("linear", reads="pooled")
def linear_probe(train, test, options, device, val_fraction, seed) -> ProbeResult:
    """Logistic regression, L2 penalty picked on validation (L-BFGS to convergence)."""
    return fit_linear_probe(
        (train.pooled, train.labels),
        (test.pooled, test.labels),
        l2_grid=tuple(options.l2),
        max_iter=options.max_iter,
        device=device,
        val_fraction=val_fraction,
        seed=seed,
    )


@register_probe("knn", reads="pooled")
def knn_probe(train, test, options, device, val_fraction, seed) -> ProbeResult:
    """Weighted k-NN on cosine similarity (DINO's), ``k`` chosen on validation."""
    return fit_knn_probe(
        (train.pooled, train.labels),
        (test.pooled, test.labels),
        ks=tuple(options.k),
        temperature=options.temperature,
        device=device,
        val_fraction=val_fraction,
        seed=seed,
    )


@register_probe("attentive", reads="tokens")
def attentive_probe(train, test, options, device, val_fraction, seed) -> ProbeResult:
    """V-JEPA's attentive probe (cross-attention pooling), a lr x weight-decay grid."""
    return fit_attentive_probe(
        (train.tokens, train.labels),
        (test.tokens, test.labels),
        num_heads=options.heads,
        depth=options.depth,
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr_grid=tuple(options.lr),
        weight_decay_grid=tuple(options.weight_decay),
        device=device,
        val_fraction=val_fraction,
        seed=seed,
    )


__all__ = ["PROBES", "Probe", "register_probe"]
