"""Evaluations of frozen features."""

from jepalab.eval.attentive_probe import (
    AttentiveClassifier,
    AttentivePooler,
    CrossAttention,
    CrossAttentionBlock,
    extract_token_features,
    fit_attentive_probe,
    train_attentive_classifiers,
)
from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    format_hparams,
    format_table,
    pixel_featurizer,
)

__all__ = [
    "AttentiveClassifier",
    "AttentivePooler",
    "CrossAttention",
    "CrossAttentionBlock",
    "ProbeResult",
    "encoder_featurizer",
    "extract_features",
    "extract_token_features",
    "fit_attentive_probe",
    "fit_linear_probe",
    "format_hparams",
    "format_table",
    "pixel_featurizer",
    "train_attentive_classifiers",
]
