"""Build an experiment from a configuration: models, method, data, Trainer, evaluation.

``data -> masks (collator) -> method(encoder, target, predictor) -> loss -> Trainer``.
Each ``build_*`` function takes the (Hydra/OmegaConf or dataclass) config section it needs,
so researchers can build any piece from Python without Hydra.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from jepalab.config import Config, DataConfig, EncoderConfig, MaskConfig, PredictorConfig
from jepalab.data import create_dataset
from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    format_table,
    pixel_featurizer,
)
from jepalab.masks import MaskCollator, MultiBlockMaskGenerator
from jepalab.methods import IJEPA, Method
from jepalab.models import create_encoder, create_predictor
from jepalab.train import Trainer

log = logging.getLogger(__name__)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by ``cfg.name`` with the shape overrides of ``cfg``."""
    kwargs: dict[str, Any] = dict(
        img_size=cfg.img_size,
        in_chans=cfg.in_chans,
        drop_path_rate=cfg.drop_path_rate,
        attn_backend=cfg.attn_backend,
    )
    for key in ("patch_size", "embed_dim", "depth", "num_heads"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    encoder = create_encoder(cfg.name, **kwargs)
    if cfg.grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder


def build_predictor(
    cfg: PredictorConfig, encoder: nn.Module, attn_backend: str = "auto"
) -> nn.Module:
    """The predictor for ``encoder``'s patch grid and width."""
    return create_predictor(
        cfg.name,
        grid_size=encoder.grid_size,
        encoder_dim=encoder.embed_dim,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads or encoder.num_heads,
        drop_path_rate=cfg.drop_path_rate,
        attn_backend=attn_backend,
    )


def build_mask_generator(cfg: MaskConfig, grid_size: tuple[int, int]) -> MultiBlockMaskGenerator:
    if cfg.name != "multiblock":
        raise ValueError(f"mask.name={cfg.name!r} is unknown; available: ['multiblock']")
    return MultiBlockMaskGenerator(
        grid_size=grid_size,
        context_scale=tuple(cfg.context_scale),
        target_scale=tuple(cfg.target_scale),
        aspect_ratio=tuple(cfg.aspect_ratio),
        num_targets=cfg.num_targets,
        min_keep=cfg.min_keep,
        allow_overlap=cfg.allow_overlap,
        trim_to_batch_min=cfg.trim_to_batch_min,
        reference_quirks=cfg.reference_quirks,
    )


def build_dataset(cfg: DataConfig, **overrides: Any):
    """``create_dataset(cfg.name, **cfg.params, **overrides)``."""
    if isinstance(cfg, DictConfig):
        missing = [f"data.{key}" for key in OmegaConf.missing_keys(cfg)]
        missing = [k for k in missing if k.split(".")[-1] not in overrides]
        if missing:
            raise ValueError(
                f"required config value(s) not set: {', '.join(missing)} "
                f"(e.g. jepalab train {missing[0]}=/path/to/data)"
            )
    params = {**_plain(cfg.params), **overrides}
    return create_dataset(cfg.name, **params)


@dataclass
class Experiment:
    """Everything a training run needs, built from one config."""

    method: Method
    dataset: Any
    collate_fn: Callable


def _build_ijepa(cfg: Config) -> Experiment:
    encoder = build_encoder(cfg.encoder)
    predictor = build_predictor(cfg.predictor, encoder, cfg.encoder.attn_backend)
    method = IJEPA(encoder, predictor, ema=tuple(cfg.method.ema), loss=cfg.method.loss)
    masks = build_mask_generator(cfg.mask, encoder.grid_size)
    return Experiment(method, build_dataset(cfg.data), MaskCollator(masks, cfg.trainer.seed))


METHODS: dict[str, Callable[[Config], Experiment]] = {"ijepa": _build_ijepa}


def build_experiment(cfg: Config) -> Experiment:
    """Seed, then build method and data for ``cfg.method.name``."""
    if cfg.method.name not in METHODS:
        raise ValueError(f"method.name={cfg.method.name!r} is unknown; available: {list(METHODS)}")
    torch.manual_seed(cfg.trainer.seed)  # model initialisation is part of the run's seed
    return METHODS[cfg.method.name](cfg)


def run_dir_of(cfg: Config) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def build_trainer(cfg: Config, exp: Experiment, run_config: dict | None = None) -> Trainer:
    """The Trainer for an experiment, writing to :func:`run_dir_of` ``(cfg)``."""
    return Trainer(
        exp.method,
        exp.dataset,
        exp.collate_fn,
        cfg.data.batch_size,
        cfg.trainer,
        cfg.optim,
        run_dir_of(cfg),
        cfg.data.num_workers,
        run_config,
    )


def train(cfg: Config) -> dict[str, Any]:
    """Pretrain as configured, then (if ``eval.linear_probe``) probe the frozen encoder.

    Returns a summary with the final loss and the probe table.
    """
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = _plain(cfg)
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
    exp = build_experiment(cfg)
    trainer = build_trainer(cfg, exp, resolved)
    log.info(
        "run %s: %d steps (%d per epoch), %.1fM trainable parameters, device %s",
        run_dir,
        trainer.last_step,
        trainer.steps_per_epoch,
        sum(p.numel() for p in exp.method.parameters() if p.requires_grad) / 1e6,
        trainer.device,
    )
    losses = trainer.fit()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": trainer.step}
    if losses:
        summary["final_loss"] = losses[-1]
    if cfg.eval.linear_probe and cfg.data.probe is not None:
        results = probe(cfg, exp.method.eval_encoder, trainer.device)
        table = format_table(results)
        print("\nLinear probe on frozen features (held-out split):\n" + table, flush=True)
        summary["probe"] = {k: asdict(v) for k, v in results.items()}
        (run_dir / "probe.json").write_text(json.dumps(summary["probe"], indent=2))
    return summary


def probe(cfg: Config, encoder: nn.Module, device: torch.device) -> dict[str, ProbeResult]:
    """Linear probes of raw pixels, a randomly initialised encoder and ``encoder``."""
    train_set = build_dataset(cfg.data, **_plain(cfg.data.probe.train))
    test_set = build_dataset(cfg.data, **_plain(cfg.data.probe.test))
    torch.manual_seed(cfg.trainer.seed + 1)
    random_encoder = build_encoder(cfg.encoder).to(device)
    candidates = {
        "raw pixels": pixel_featurizer,
        "random-init encoder": encoder_featurizer(random_encoder),
        "trained encoder": encoder_featurizer(encoder),
    }
    results = {}
    for name, featurize in candidates.items():
        train_xy = extract_features(featurize, train_set, cfg.eval.batch_size, device)
        test_xy = extract_features(featurize, test_set, cfg.eval.batch_size, device)
        results[name] = fit_linear_probe(train_xy, test_xy, seed=cfg.trainer.seed)
    return results


def _plain(node: Any) -> Any:
    """A DictConfig/dataclass section as plain Python containers."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if hasattr(node, "__dataclass_fields__"):
        return asdict(node)
    return node
