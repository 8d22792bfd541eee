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
from jepalab.eval.features import extract_features
from jepalab.eval.linear_probe import fit_linear_probe
from jepalab.eval.protocol import ProbeResult
from jepalab.models.build import build_encoder

log = logging.getLogger(__name__)

PROBES = ("linear", "attentive", "none")


def probe(
    cfg: Config, encoder: nn.Module, device: torch.device
) -> tuple[dict[str, ProbeResult], dict[str, dict[str, int]]]:
    """Probe raw pixels, a randomly initialised encoder and ``encoder`` on ``data.probe``.

    ``eval.probe=linear``: logistic regression on average-pooled features (I-JEPA).
    ``eval.probe=attentive``: V-JEPA's attentive probe on all tokens; raw pixels enter as the
    encoder's own patch/tubelet grid of pixel tokens. Features come from
    :func:`~jepalab.eval.features.extract_features`, as for ``jepalab eval probe``.

    Returns the results by features and, per split, ``{"samples": probed, "skipped":
    unreadable}`` (unreadable files are logged by name and left out).
    """
    sets = {split: build_dataset(cfg.data, **to_plain(cfg.data.probe[split])) for split in SPLITS}
    torch.manual_seed(cfg.trainer.seed + 1)
    random_encoder = build_encoder(cfg.encoder).to(device)
    linear = cfg.eval.probe == "linear"  # pooled features; attentive: all tokens
    candidates = {  # (encoder, raw pixels in its patch / tubelet grid)
        "raw pixels": (encoder, True),
        "random-init encoder": (random_encoder, False),
        "trained encoder": (encoder, False),
    }

    def fit(train_xy, test_xy):
        if linear:
            return fit_linear_probe(train_xy, test_xy, seed=cfg.trainer.seed)
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

    results, probed = {}, {}
    for name, (model, raw_pixels) in candidates.items():
        log.info("probe: %s", name)
        xy = {}
        for split in SPLITS:
            features = extract_features(
                model,
                sets[split],
                raw_pixels=raw_pixels,
                pooled=linear,
                tokens=not linear,
                batch_size=cfg.eval.batch_size,
                device=device,
                desc=f"probe {split} split",
            )
            xy[split] = (features.pooled if linear else features.tokens, features.labels)
            probed[split] = len(features.labels)
        results[name] = fit(xy["train"], xy["test"])
    return results, probe_split_counts(sets, probed)


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


__all__ = ["PROBES", "SPLITS", "probe", "probe_split_counts"]
