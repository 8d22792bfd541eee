"""The probe ``jepalab train`` runs after training (``eval.probe``): raw pixels, a random-init
encoder and the trained one, on the data's labelled probe splits."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from jepalab.config import Config, to_plain
from jepalab.data.build import build_dataset
from jepalab.eval.attentive_probe import fit_attentive_probe
from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    pixel_featurizer,
)
from jepalab.models.build import build_encoder

log = logging.getLogger(__name__)

PROBES = ("linear", "attentive", "none")


def probe(
    cfg: Config, encoder: nn.Module, device: torch.device
) -> tuple[dict[str, ProbeResult], dict[str, dict[str, int]]]:
    """Probe raw pixels, a randomly initialised encoder and ``encoder`` on ``data.probe``.

    ``eval.probe=linear``: logistic regression on average-pooled features (I-JEPA).
    ``eval.probe=attentive``: V-JEPA's attentive probe on all tokens; raw pixels enter as the
    encoder's own patch/tubelet grid of pixel tokens.

    Returns the results by features and, per split, ``{"samples": probed, "skipped":
    unreadable}`` (unreadable files are logged by name and left out).
    """
    sets = {split: build_dataset(cfg.data, **to_plain(cfg.data.probe[split])) for split in SPLITS}
    torch.manual_seed(cfg.trainer.seed + 1)
    random_encoder = build_encoder(cfg.encoder).to(device)
    batch_size = cfg.eval.batch_size
    if cfg.eval.probe == "linear":
        candidates = {
            "raw pixels": pixel_featurizer,
            "random-init encoder": encoder_featurizer(random_encoder),
            "trained encoder": encoder_featurizer(encoder),
        }

        def fit(train_xy, test_xy):
            return fit_linear_probe(train_xy, test_xy, seed=cfg.trainer.seed)

    else:
        candidates = {
            "raw pixels": pixel_tokens(encoder),
            "random-init encoder": random_encoder.eval(),
            "trained encoder": encoder.eval(),
        }

        def fit(train_xy, test_xy):
            return fit_attentive_probe(
                train_xy,
                test_xy,
                num_heads=cfg.eval.attentive_heads,
                depth=cfg.eval.attentive_depth,
                epochs=cfg.eval.attentive_epochs,
                batch_size=cfg.eval.attentive_batch_size,
                lr_grid=tuple(cfg.eval.attentive_lr),
                weight_decay_grid=tuple(cfg.eval.attentive_weight_decay),
                seed=cfg.trainer.seed,
                device=device,
            )

    results = {}
    for name, featurize in candidates.items():
        log.info("probe: %s", name)
        xy = {
            split: extract_features(featurize, sets[split], batch_size, device) for split in SPLITS
        }
        results[name] = fit(xy["train"], xy["test"])
    return results, probe_split_counts(sets, {split: len(xy[split][1]) for split in SPLITS})


SPLITS = ("train", "test")


def probe_split_counts(sets: dict[str, Any], probed: dict[str, int]) -> dict[str, dict[str, int]]:
    """``{split: {"samples": probed, "skipped": unreadable}}``, logged: the samples a probe
    did not see because their files could not be read."""
    counts = {}
    for split, dataset in sets.items():
        skipped = len(dataset) - probed[split]
        counts[split] = {"samples": probed[split], "skipped": skipped}
        log.log(
            logging.WARNING if skipped else logging.INFO,
            "probe %s split: %d samples probed, %d unreadable skipped (named above)",
            split,
            probed[split],
            skipped,
        )
    return counts


def pixel_tokens(encoder: nn.Module):
    """Raw pixels cut into ``encoder``'s patch (or tubelet) grid: ``x -> (B, N, pixels)``."""
    return encoder.patchify


__all__ = ["PROBES", "SPLITS", "pixel_tokens", "probe", "probe_split_counts"]
