"""The Trainer of a configured experiment, and where its run goes."""

from __future__ import annotations

from pathlib import Path

from jepalab.config import Config, to_plain
from jepalab.methods.build import Experiment
from jepalab.train.trainer import Trainer


def run_dir_of(cfg: Config) -> Path:
    """``run_dir``, or ``runs/<name>`` when it is not set."""
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def build_trainer(cfg: Config, exp: Experiment, run_config: dict | None = None) -> Trainer:
    """The Trainer for an experiment, writing to :func:`run_dir_of` ``(cfg)``. Its
    checkpoints record ``run_config`` (default: ``cfg`` itself, resolved), so that
    ``load_run`` and the ``jepalab eval`` commands can rebuild the run and its data."""
    return Trainer(
        exp.method,
        exp.dataset,
        exp.collate_fn,
        cfg.data.batch_size,
        cfg.trainer,
        cfg.optim,
        run_dir_of(cfg),
        cfg.data.num_workers,
        run_config if run_config is not None else to_plain(cfg),
    )


__all__ = ["build_trainer", "run_dir_of"]
