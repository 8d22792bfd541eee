"""jepalab: a research training library for JEPA world models.

What a researcher importing the library needs is one name away (``jepalab.IJEPA``,
``jepalab.Trainer``, ``jepalab.load_run``, ...); each is imported when first used, so
``import jepalab`` stays light. (``jepalab.train`` is the training package; the function
that runs a configured experiment is :func:`jepalab.cli.train.train`.) Recipes:
docs/python.md; how the pieces fit: docs/architecture.md.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# MKL's matrix products sum in an order that depends on the thread count unless its strict
# conditional-numerical-reproducibility mode is on (read at its first call); with it, a run
# resumed with another thread count, or on a loaded machine, computes the same bits
# (docs/checkpoints.md). No measurable cost at our sizes; set MKL_CBWR yourself to override.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # models (with weights from a checkpoint: create_encoder / create_predictor)
    "create_encoder": "jepalab.interop.pretrained",
    "create_predictor": "jepalab.interop.pretrained",
    "list_encoders": "jepalab.models",
    "list_predictors": "jepalab.models",
    "register_encoder": "jepalab.models",
    "register_predictor": "jepalab.models",
    "VisionTransformer": "jepalab.models",
    "ConvNeXt": "jepalab.models",
    "MaskedPredictor": "jepalab.models",
    "ActionConditionedPredictor": "jepalab.models",
    "Ragged": "jepalab.ragged",
    "attention": "jepalab.kernels.attention",
    # masks and data
    "MaskCollator": "jepalab.masks",
    "MultiBlockMaskGenerator": "jepalab.masks",
    "MultiBlock3DMaskGenerator": "jepalab.masks",
    "register_dataset": "jepalab.data",
    "create_dataset": "jepalab.data",
    "list_datasets": "jepalab.data",
    # methods
    "Method": "jepalab.methods",
    "IJEPA": "jepalab.methods",
    "VJEPA": "jepalab.methods",
    "ActionConditioned": "jepalab.methods",
    "SIGReg": "jepalab.methods.regularizers",
    "VICRegTerms": "jepalab.methods.regularizers",
    # configuration, training, reloading
    "Config": "jepalab.config",
    "TrainerConfig": "jepalab.config",
    "OptimConfig": "jepalab.config",
    "MethodConfig": "jepalab.config",
    "register_schema": "jepalab.config",
    "compose_config": "jepalab.config",
    "build_experiment": "jepalab.methods.build",
    "Trainer": "jepalab.train",
    "load_run": "jepalab.runs",
    "load_action_model": "jepalab.runs",
    # evaluation and planning
    "rankme": "jepalab.train.collapse",
    "extract_features": "jepalab.eval",
    "fit_linear_probe": "jepalab.eval",
    "fit_attentive_probe": "jepalab.eval",
    "fit_knn_probe": "jepalab.eval",
    "LatentWorldModel": "jepalab.planning.world_model",
    "latent_distance": "jepalab.planning.world_model",
    "CEMConfig": "jepalab.planning",
    "MPPIConfig": "jepalab.planning",
    "cem": "jepalab.planning",
    "mppi": "jepalab.planning",
}


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jepalab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
