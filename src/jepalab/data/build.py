"""Datasets from the ``data.*`` config section, and the checks that data and encoder agree."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from jepalab.config import Config, DataConfig, to_plain
from jepalab.data.registry import create_dataset
from jepalab.errors import ConfigError


def build_dataset(cfg: DataConfig, **overrides: Any):
    """``create_dataset(cfg.name, **cfg.params, **overrides)``."""
    if isinstance(cfg, DictConfig):  # the probe splits' values: see unset_probe_keys
        keys = ["data." + key.removeprefix("data.") for key in OmegaConf.missing_keys(cfg)]
        missing = sorted(
            k for k in keys if not k.startswith("data.probe.") and k.split(".")[-1] not in overrides
        )
        if missing:
            raise ValueError(
                f"required config value(s) not set: {', '.join(missing)} "
                f"(e.g. jepalab train {missing[0]}=/path/to/data)"
            )
    params = {**to_plain(cfg.params), **overrides}
    return create_dataset(cfg.name, **params)


def unset_probe_keys(cfg: DataConfig) -> list[str]:
    """The required values of the probe splits left unset (``???``), e.g.
    ``data.probe.train.root`` of ``data=image_folder``; empty without probe splits."""
    if not isinstance(cfg, DictConfig) or cfg.get("probe") is None:
        return []
    keys = ["data." + key.removeprefix("data.") for key in OmegaConf.missing_keys(cfg)]
    return sorted(k for k in keys if k.startswith("data.probe."))


def check_data_fits_encoder(cfg: Config, dataset: Any) -> None:
    """The encoder reads what the data yields: ``encoder.in_chans`` follows ``data.channels``
    (configs/config.yaml); an override that breaks that is an error naming both keys,
    instead of a shape error deep inside the first step."""
    channels = getattr(dataset, "in_chans", None)
    if channels is None:
        return
    if channels != cfg.data.channels:
        raise ConfigError(
            f"data.name={cfg.data.name!r} yields {channels}-channel samples but "
            f"data.channels={cfg.data.channels}; set data.channels={channels}"
        )
    if cfg.encoder.in_chans != channels:
        raise ConfigError(
            f"encoder.in_chans={cfg.encoder.in_chans} but the data yields {channels} "
            f"channel(s) (data.channels={cfg.data.channels}); leave encoder.in_chans unset "
            "(it follows data.channels) or change the data"
        )


__all__ = ["build_dataset", "check_data_fits_encoder", "unset_probe_keys"]
