"""Values checked at compose time: what the schema's types cannot say (counts >= 1,
fractions in range, names of registered components), each error naming its key.

The CLI's layer: the allowed names come from every component's module, so this sits above
them all (:mod:`jepalab.config`, the schema, imports none of them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig

from jepalab.config import SCHEMAS, schema_mismatch
from jepalab.errors import ConfigError
from jepalab.eval.after_training import PROBES
from jepalab.kernels.attention import BACKENDS as ATTENTION_BACKENDS
from jepalab.masks.build import MASKS
from jepalab.methods.action import FRAME_POOLING
from jepalab.methods.build import METHODS
from jepalab.methods.ijepa import LOSSES, TARGETS
from jepalab.methods.regularizers import REGULARIZE_ON, REGULARIZERS
from jepalab.models.vit import POS_EMBEDS
from jepalab.train.distributed import BACKENDS as DIST_BACKENDS
from jepalab.train.distributed import MODES
from jepalab.train.trainer import STRATEGIES

PRECISIONS = ("auto", "fp32", "bf16")
WANDB_MODES = ("disabled", "offline", "online")
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def validate_config(cfg: Any) -> None:
    """Check what the schema's types cannot: counts >= 1, fractions and scale ranges in
    range, names of enum-like strings. ``cfg`` is a composed ``DictConfig`` or a
    :class:`Config`.

    Raises :class:`~jepalab.errors.ConfigError` naming the first bad key and its value, e.g.
    ``data.batch_size=0: must be >= 1``. ``jepalab train`` calls it right after composing the
    config, :func:`jepalab.cli.train.train` again for configs built in Python.
    """
    _check_schemas(cfg)
    for key, rule in _rules():
        value = _select(cfg, key)
        if value is _ABSENT:  # a key of another method's schema
            continue
        problem = rule(value)
        if problem:
            raise ConfigError(f"{key}={_show(value)}: {problem}")
    blocks = _select(cfg, "mask.blocks")  # 3-D masks only
    for i, block in enumerate([] if blocks is _ABSENT else blocks or []):
        for name, rule in _BLOCK_RULES:
            problem = rule(getattr(block, name))
            if problem:
                key = f"mask.blocks[{i}].{name}"
                raise ConfigError(f"{key}={_show(getattr(block, name))}: {problem}")
    _check_grid(cfg.encoder)


def _check_schemas(cfg: Any) -> None:
    """Each section with schemas per family (encoder, method, mask) was composed from the
    schema of its ``name``: ``method=action`` chooses both; ``method.name=action`` alone would
    leave I-JEPA's keys."""
    for group in SCHEMAS:
        section = getattr(cfg, group)
        mismatch = schema_mismatch(group, section)
        if mismatch is None:
            continue  # an unknown name is reported by the <group>.name rule
        schema, expected = mismatch
        raise ConfigError(
            f"{group}.name={section.name}: the {group} section has the keys of "
            f"{schema.__name__}, {section.name} needs {expected.__name__}'s; choose it with "
            f"{group}=<configs/{group} option> (e.g. {group}={section.name}), not {group}.name"
        )


def _check_grid(enc: Any) -> None:
    """The token grid: the patch size divides the image, the tubelet size the clip."""
    if enc.patch_size is not None and enc.img_size % enc.patch_size:
        raise ConfigError(
            f"encoder.patch_size={enc.patch_size}: must divide encoder.img_size={enc.img_size}"
        )
    if enc.num_frames > 1 and enc.num_frames % enc.tubelet_size:
        raise ConfigError(
            f"encoder.tubelet_size={enc.tubelet_size}: must divide "
            f"encoder.num_frames={enc.num_frames}"
        )


Rule = Callable[[Any], "str | None"]


def _at_least(low: float) -> Rule:
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _within(low: float, high: float, open_high: bool = False) -> Rule:
    bracket = ")" if open_high else "]"

    def rule(v: Any) -> str | None:
        ok = low <= v < high if open_high else low <= v <= high
        return None if ok else f"must be in [{low}, {high}{bracket}"

    return rule


def _optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else rule(v)


def _each(rule: Rule) -> Rule:
    def check(values: Any) -> str | None:
        for v in values:
            problem = rule(v)
            if problem:
                return f"every entry {problem}"
        return None

    return check


def _range(high: float | None = 1.0) -> Rule:
    """A ``[low, high]`` pair with ``0 < low <= high`` (``<= high`` of the bound)."""

    def rule(pair: Any) -> str | None:
        if len(pair) != 2:
            return "must be a pair [low, high]"
        lo, hi = pair
        if not 0 < lo <= hi or (high is not None and hi > high):
            limit = f" <= {high}" if high is not None else ""
            return f"must satisfy 0 < low <= high{limit}"
        return None

    return rule


def _pair_of(rule: Rule) -> Rule:
    def check(pair: Any) -> str | None:
        return "must be a pair [start, end]" if len(pair) != 2 else _each(rule)(pair)

    return check


def _one_of(choices: Any) -> Rule:
    allowed = tuple(choices)
    return lambda v: None if v in allowed else f"must be one of {list(allowed)}"


def _device(v: Any) -> str | None:
    return None if _DEVICE.match(str(v)) else "must be auto, cpu, mps, cuda or cuda:N"


_BLOCK_RULES: list[tuple[str, Rule]] = [
    ("num_blocks", _at_least(1)),
    ("spatial_scale", _range()),
    ("temporal_scale", _range()),
    ("aspect_ratio", _range(None)),
    ("max_temporal_keep", _within(0, 1)),
]


def _rules() -> list[tuple[str, Rule]]:
    """``(key, rule)`` for every checked key; the allowed names come from the modules that
    define them."""
    count, optional_count, non_negative = _at_least(1), _optional(_at_least(1)), _at_least(0)
    return [
        ("data.batch_size", count),
        ("data.num_workers", non_negative),
        ("trainer.epochs", _positive),
        ("trainer.max_steps", optional_count),
        ("trainer.log_every", count),
        ("trainer.ckpt_every", count),
        ("trainer.keep_last", non_negative),  # 0: keep every checkpoint
        ("trainer.accum_steps", count),
        ("trainer.monitor_every", non_negative),  # 0: no collapse monitors
        ("trainer.threads", optional_count),
        ("trainer.max_bad_sample_fraction", _within(0, 1)),
        ("trainer.rank_warning", _within(0, 1)),
        ("trainer.device", _device),
        ("trainer.precision", _one_of(PRECISIONS)),
        ("trainer.strategy", _one_of(STRATEGIES)),
        ("trainer.distributed", _one_of(MODES)),
        ("trainer.dist_backend", _one_of(DIST_BACKENDS)),
        ("trainer.wandb.mode", _one_of(WANDB_MODES)),
        ("encoder.img_size", count),
        ("encoder.in_chans", count),
        ("encoder.patch_size", optional_count),
        ("encoder.embed_dim", optional_count),
        ("encoder.depth", optional_count),
        ("encoder.num_heads", optional_count),
        ("encoder.dims", _optional(_each(count))),
        ("encoder.depths", _optional(_each(count))),
        ("encoder.num_frames", count),
        ("encoder.tubelet_size", count),
        ("encoder.drop_path_rate", _within(0, 1, open_high=True)),
        ("encoder.attn_backend", _one_of(ATTENTION_BACKENDS)),
        ("encoder.pos_embed", _one_of(POS_EMBEDS)),
        ("predictor.embed_dim", count),
        ("predictor.depth", count),
        ("predictor.num_heads", optional_count),
        ("predictor.drop_path_rate", _within(0, 1, open_high=True)),
        ("predictor.pos_embed", _optional(_one_of(POS_EMBEDS))),
        ("mask.name", _one_of(MASKS)),
        ("mask.context_scale", _range()),
        ("mask.target_scale", _range()),
        ("mask.aspect_ratio", _range(None)),
        ("mask.num_targets", count),
        ("mask.min_keep", non_negative),
        ("method.name", _one_of(METHODS)),
        ("method.loss", _one_of(LOSSES)),
        ("method.loss_exp", _positive),
        ("method.ema", _pair_of(_within(0, 1))),
        ("method.target_layers", count),
        ("method.dense_levels", count),
        ("method.context_loss_weight", non_negative),
        ("method.context_loss_ramp", _pair_of(non_negative)),
        ("method.target", _one_of(TARGETS)),
        ("method.regularizer", _one_of(REGULARIZERS)),
        ("method.regularizer_weight", _optional(_within(0, 1))),
        ("method.regularize_on", _one_of(REGULARIZE_ON)),
        ("method.sigreg_slices", count),
        ("method.sigreg_knots", _at_least(2)),
        ("method.sigreg_t_max", _positive),
        ("method.auto_steps", count),
        ("method.trainable_encoder_blocks", _at_least(-1)),  # -1: all blocks
        ("method.frame_pooling", _one_of(FRAME_POOLING)),
        ("method.smoothness_weight", non_negative),
        ("method.inverse_dynamics_weight", non_negative),
        ("optim.lr", non_negative),
        ("optim.start_lr", non_negative),
        ("optim.final_lr", non_negative),
        ("optim.warmup_epochs", non_negative),
        ("optim.weight_decay", non_negative),
        ("optim.final_weight_decay", non_negative),
        ("optim.betas", _pair_of(_within(0, 1, open_high=True))),
        ("optim.eps", _positive),
        ("optim.clip_grad", _optional(_positive)),
        ("eval.probe", _one_of(PROBES)),
        ("eval.batch_size", count),
        ("eval.attentive_epochs", count),
        ("eval.attentive_batch_size", count),
        ("eval.attentive_heads", count),
        ("eval.attentive_depth", count),
        ("eval.attentive_lr", _each(_positive)),
        ("eval.attentive_weight_decay", _each(non_negative)),
    ]


_ABSENT = object()


def _select(cfg: Any, key: str) -> Any:
    """The value at the dotted ``key``, or ``_ABSENT`` where the schema has no such key."""
    for part in key.split("."):
        if isinstance(cfg, DictConfig):
            if part not in cfg:
                return _ABSENT
            cfg = cfg[part]
        else:
            cfg = getattr(cfg, part, _ABSENT)
        if cfg is _ABSENT:
            return _ABSENT
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


__all__ = ["validate_config"]
