"""Evaluations of frozen features."""

from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    format_table,
    pixel_featurizer,
)

__all__ = [
    "ProbeResult",
    "encoder_featurizer",
    "extract_features",
    "fit_linear_probe",
    "format_table",
    "pixel_featurizer",
]
