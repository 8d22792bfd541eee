"""Evaluations of frozen features."""

from jepalab.eval.attentive_probe import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttention,
    CrossAttentionBlock,
    extract_token_features,
    fit_attentive_probe,
    fit_attentive_sweep,
    train_attentive_classifiers,
)
from jepalab.eval.knn import fit_knn_probe, knn_predict
from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    format_hparams,
    format_table,
    pixel_featurizer,
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
    "AttentiveClassifier",
    "AttentivePooler",
    "CrossAttention",
    "CrossAttentionBlock",
    "ProbeResult",
    "SweepResult",
    "Windows",
    "auroc",
    "context_use",
    "encoder_featurizer",
    "event_windows",
    "extract_features",
    "extract_token_features",
    "fit_attentive_probe",
    "fit_attentive_sweep",
    "fit_knn_probe",
    "fit_linear_probe",
    "fit_linear_sweep",
    "format_hparams",
    "format_table",
    "head_accuracies",
    "knn_predict",
    "pairwise_accuracy",
    "pixel_featurizer",
    "sliding_windows",
    "surprise_curves",
    "surprise_metrics",
    "train_attentive_classifiers",
    "train_linear_heads",
    "validation_split",
]
