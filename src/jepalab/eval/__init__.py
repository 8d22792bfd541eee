"""Evaluations of frozen features: one feature extractor (:mod:`jepalab.eval.features`), one
linear, one k-NN and one attentive probe sharing one selection protocol
(:mod:`jepalab.eval.protocol`), the surprise benchmark."""

from jepalab.eval.attentive_probe import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttention,
    CrossAttentionBlock,
    fit_attentive_probe,
    train_attentive_classifiers,
)
from jepalab.eval.features import CachedFeatures, extract_features, pool_tokens
from jepalab.eval.knn import fit_knn_probe, knn_predict
from jepalab.eval.linear_probe import fit_linear_probe, train_logistic_regression
from jepalab.eval.protocol import (
    ProbeResult,
    format_hparams,
    format_table,
    standardise,
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
    "Windows",
    "auroc",
    "context_use",
    "event_windows",
    "extract_features",
    "fit_attentive_probe",
    "fit_knn_probe",
    "fit_linear_probe",
    "format_hparams",
    "format_table",
    "knn_predict",
    "pool_tokens",
    "pairwise_accuracy",
    "sliding_windows",
    "standardise",
    "surprise_curves",
    "surprise_metrics",
    "train_attentive_classifiers",
    "train_logistic_regression",
    "validation_split",
]
