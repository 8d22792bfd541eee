"""jepalab: a research training library for JEPA world models."""

from jepalab.models import create_encoder, create_predictor, list_encoders, list_predictors

__version__ = "0.1.0"

__all__ = ["__version__", "create_encoder", "create_predictor", "list_encoders", "list_predictors"]
