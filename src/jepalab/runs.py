"""Reloading what training wrote: a run's method with its trained weights.

``load_run(RUN)`` rebuilds the masked-JEPA method of a run directory (its newest checkpoint
that loads) or of a checkpoint file; ``load_action_model`` an action-conditioned one.
Modules are rebuilt from the run's stored configuration, or -- for a Trainer built in
Python, which has none -- from the constructor calls every checkpoint records
(:mod:`jepalab.specs`), so their shapes always match the weights; every key must load.
The encoder an action-conditioned run starts from: :mod:`jepalab.models.pretrained`; the
file level (atomic writes, ``weights_only`` reads): :mod:`jepalab.checkpoint`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from jepalab.checkpoint import load_newest
from jepalab.config import config_from_checkpoint
from jepalab.errors import CheckpointError
from jepalab.methods import ActionConditioned, Method
from jepalab.methods.build import build_action_model, build_initial_method
from jepalab.specs import build_from_specs

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained I-JEPA / V-JEPA method rebuilt from one of our checkpoints."""

    # the run's configuration (the :class:`Config` schema); None for a Trainer built in
    # Python, whose checkpoints record only the models (rebuilt from jepalab.specs)
    cfg: DictConfig | None
    method: Method  # I-JEPA / V-JEPA: context, EMA target encoder and predictor; eval mode
    step: int
    file: Path


NO_CONFIG = (
    "records its models but no run configuration (a Trainer built in Python without "
    "run_config=); the command needs the run's data and encoder settings: train with "
    "`jepalab train` or `build_trainer(cfg, experiment)`"
)


def load_run(path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild the masked-JEPA method of a run directory (newest checkpoint) or checkpoint
    file, with its trained weights, for evaluation (probes, surprise).

    The modules are built from the configuration stored in the checkpoint, so their shapes
    always match the weights; every key must load (``strict``).
    """
    file, state = load_newest(path)  # past damaged newer checkpoints
    specs = state.get("models") or {}
    cfg = config_from_checkpoint(state, file) if state.get("config") else None
    if cfg is not None and cfg.method.name in ("ijepa", "vjepa"):
        method = build_initial_method(cfg)
    elif "" in specs:  # a Trainer built in Python, or a method without a config builder
        method = build_from_specs(specs)
    elif cfg is None:
        raise CheckpointError(
            f"{file} records neither a run configuration nor its models; it was written by "
            "an older jepalab Trainer from Python and cannot be rebuilt"
        )
    else:
        raise CheckpointError(
            f"{file} is a method.name={cfg.method.name!r} run written before models were "
            "recorded; load_run rebuilds such runs only for I-JEPA / V-JEPA"
        )
    method.load_state_dict(state["model"])
    method.to(device).eval()
    log.info("loaded %s run %s (step %s)", type(method).__name__, file, state.get("step"))
    return LoadedRun(cfg, method, int(state.get("step", 0)), file)


def load_action_model(path: str | Path, device: str = "cpu") -> tuple[ActionConditioned, dict]:
    """An :class:`ActionConditioned` method restored from its training checkpoint (a file, or
    a run directory's newest checkpoint that loads), and the run's configuration."""
    file, state = load_newest(path, map_location="cpu")
    stored = state.get("config") or {}
    if stored.get("method", {}).get("name") != "action":
        raise CheckpointError(
            f"{file} is not an action-conditioned checkpoint (method.name="
            f"{stored.get('method', {}).get('name')!r}); train one with method=action"
        )
    weights = state["model"]
    action_dim = weights["predictor.action_encoder.weight"].shape[1]
    state_key = "predictor.state_encoder.weight"
    state_dim = weights[state_key].shape[1] if state_key in weights else 0
    # merged onto the schema: a run saved before a key existed gets that key's default
    cfg = config_from_checkpoint(state, file)
    method = build_action_model(cfg, action_dim, state_dim, load_encoder=False)
    method.load_state_dict(weights)
    log.info("loaded %s (step %s)", file, state.get("step"))
    return method.to(device).eval(), stored


__all__ = ["LoadedRun", "load_action_model", "load_run"]
