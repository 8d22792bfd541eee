"""Evaluations of frozen features: one feature extractor (:mod:`jepalab.eval.features`),
linear (L-BFGS and SGD-sweep), k-NN and attentive probes, the surprise benchmark."""

from jepalab.eval.attentive_probe import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttention,
    CrossAttentionBlock,
    fit_attentive_probe,
    fit_attentive_sweep,
    train_attentive_classifiers,
)
from jepalab.eval.features import CachedFeatures, extract_features, pool_tokens
from jepalab.eval.knn import fit_knn_probe, knn_predict
from jepalab.eval.linear_probe import (
    ProbeResult,
    fit_linear_probe,
    format_hparams,
    format_table,
)
from jepalab.eval.linear_sweep import (
    SweepResult,
    fit_linear_sweep,
    head_accuracies,
    train_linear_heads,
    validation_split,
)
from jepalab.eval.surprise import (
    Windows,
    auroc,
    context_use,
    event_windows,
    pairwise_accuracy,
    sliding_windows,
    surprise_curves,
    surprise_metrics,
)

__all__ = [
    "CachedFeatures",
    "AttentiveClassifier",
    "AttentivePooler",
    "CrossAttention",
    "CrossAttentionBlock",
    "ProbeResult",
    "SweepResult",
    "Windows",
    "auroc",
    "context_use",
    "event_windows",
    "extract_features",
    "fit_attentive_probe",
    "fit_attentive_sweep",
    "fit_knn_probe",
    "fit_linear_probe",
    "fit_linear_sweep",
    "format_hparams",
    "format_table",
    "head_accuracies",
    "knn_predict",
    "pool_tokens",
    "pairwise_accuracy",
    "sliding_windows",
    "surprise_curves",
    "surprise_metrics",
    "train_attentive_classifiers",
    "train_linear_heads",
    "validation_split",
]
