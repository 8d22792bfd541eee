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

from jepalab.config import (
    Config,
    DataConfig,
    EncoderConfig,
    MaskConfig,
    PredictorConfig,
    validate_config,
)
from jepalab.data import create_dataset
from jepalab.data.trajectories import collate_trajectories
from jepalab.errors import ConfigError
from jepalab.eval.attentive_probe import fit_attentive_probe
from jepalab.eval.linear_probe import (
    ProbeResult,
    encoder_featurizer,
    extract_features,
    fit_linear_probe,
    format_table,
    pixel_featurizer,
)
from jepalab.masks import (
    BlockSpec,
    MaskCollator,
    MaskGenerator,
    MultiBlock3DMaskGenerator,
    MultiBlockMaskGenerator,
)
from jepalab.methods import IJEPA, VJEPA, ActionConditioned, Method
from jepalab.methods.regularizers import build_regularizer, regularizer_weight
from jepalab.models import create_encoder, create_predictor
from jepalab.runs import (  # noqa: F401  (LoadedRun, config_from_checkpoint: re-exported)
    LoadedRun,
    config_from_checkpoint,
    load_pretrained_encoder,
    load_run,
)
from jepalab.train import Trainer
from jepalab.train.resume import accept_run

log = logging.getLogger(__name__)


VIT_SHAPE_KEYS = ("embed_dim", "depth", "num_heads")
CONVNEXT_SHAPE_KEYS = ("dims", "depths")


def is_convnext(name: str) -> bool:
    """Whether the registered encoder ``name`` is a ConvNeXt (V1 or V2)."""
    return name.startswith("convnext")


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by ``cfg.name`` with the shape overrides of ``cfg``.

    ViTs take ``embed_dim/depth/num_heads``, ConvNeXts ``dims/depths``. An experiment written
    for a ViT keeps working with ``encoder=convnext_*``: its ViT shape keys are reported as
    ignored, and the grid keys (``img_size``, ``patch_size``, ``num_frames``) apply to both.
    """
    kwargs: dict[str, Any] = dict(
        img_size=cfg.img_size, in_chans=cfg.in_chans, drop_path_rate=cfg.drop_path_rate
    )
    if cfg.num_frames > 1:
        kwargs.update(num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size)
    if cfg.patch_size is not None:
        kwargs["patch_size"] = cfg.patch_size
    own, foreign = (
        (CONVNEXT_SHAPE_KEYS, VIT_SHAPE_KEYS)
        if is_convnext(cfg.name)
        else (VIT_SHAPE_KEYS, CONVNEXT_SHAPE_KEYS)
    )
    for key in own:
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    ignored = {key: getattr(cfg, key) for key in foreign if getattr(cfg, key) is not None}
    if is_convnext(cfg.name):
        if cfg.pos_embed != "sincos":
            ignored["pos_embed"] = cfg.pos_embed
        if cfg.rope_reference_layout:
            ignored["rope_reference_layout"] = True
        if ignored:
            log.warning(
                "%s ignores %s: those keys shape a ViT; a ConvNeXt's widths come from its name "
                "(override encoder.dims / encoder.depths)",
                cfg.name,
                ", ".join(f"encoder.{k}={v}" for k, v in ignored.items()),
            )
    else:
        if ignored:
            raise ValueError(
                f"{', '.join(f'encoder.{k}' for k in ignored)} shape a ConvNeXt, but "
                f"encoder.name={cfg.name!r} is not one"
            )
        kwargs.update(attn_backend=cfg.attn_backend, pos_embed=cfg.pos_embed)
        if cfg.pos_embed == "rope":
            kwargs["rope_reference_layout"] = cfg.rope_reference_layout
    encoder = create_encoder(cfg.name, **kwargs)
    if cfg.grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder


def build_predictor(
    cfg: PredictorConfig,
    encoder: nn.Module,
    attn_backend: str = "auto",
    num_mask_tokens: int = 1,
) -> nn.Module:
    """The predictor for ``encoder``'s token grid, width and positional scheme."""
    return create_predictor(
        cfg.name,
        grid_size=encoder.grid_size,
        encoder_dim=encoder.embed_dim,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads or default_num_heads(encoder, cfg.embed_dim),
        drop_path_rate=cfg.drop_path_rate,
        attn_backend=attn_backend,
        num_mask_tokens=num_mask_tokens,
        **predictor_positions(cfg.pos_embed, encoder),
    )


def predictor_positions(pos_embed: str | None, encoder: nn.Module) -> dict[str, Any]:
    """The predictor's position scheme: ``predictor.pos_embed`` or the encoder's, and for
    RoPE the encoder's channel layout (``encoder.rope_reference_layout``)."""
    kind = pos_embed or encoder.pos_embed_kind
    out: dict[str, Any] = {"pos_embed": kind}
    if kind == "rope":
        rope = getattr(encoder, "rope", None)
        out["rope_reference_layout"] = bool(getattr(rope, "reference_layout", False))
    return out


def default_num_heads(encoder: nn.Module, width: int) -> int:
    """Predictor heads when not configured: the encoder's (I-JEPA), or for an encoder without
    attention (ConvNeXt) heads of width 32 (V-JEPA's predictor: 384 wide, 12 heads)."""
    heads = getattr(encoder, "num_heads", None)
    return heads if heads else max(1, width // 32)


MASKS = ("multiblock", "multiblock3d")


def build_mask_generator(cfg: MaskConfig, grid_size: tuple[int, ...]) -> MaskGenerator:
    """I-JEPA 2-D multi-block masks or V-JEPA 3-D multi-block masks, by ``cfg.name``."""
    if cfg.name == "multiblock3d":
        if not cfg.blocks:
            raise ValueError("mask.blocks is empty: multiblock3d needs mask configurations")
        specs = [
            BlockSpec(
                num_blocks=b.num_blocks,
                spatial_scale=tuple(b.spatial_scale),
                temporal_scale=tuple(b.temporal_scale),
                aspect_ratio=tuple(b.aspect_ratio),
                max_temporal_keep=b.max_temporal_keep,
            )
            for b in cfg.blocks
        ]
        return MultiBlock3DMaskGenerator(
            grid_size,
            specs,
            min_keep=cfg.min_keep,
            trim_to_batch_min=cfg.trim_to_batch_min,
            reference_quirks=cfg.reference_quirks,
        )
    if cfg.name != "multiblock":
        raise ValueError(f"mask.name={cfg.name!r} is unknown; available: {list(MASKS)}")
    if len(grid_size) != 2:
        raise ValueError(
            f"mask.name=multiblock samples 2-D blocks but the encoder's grid is {grid_size}; "
            "use mask=multiblock3d for video"
        )
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
    params = {**_plain(cfg.params), **overrides}
    return create_dataset(cfg.name, **params)


def unset_probe_keys(cfg: DataConfig) -> list[str]:
    """The required values of the probe splits left unset (``???``), e.g.
    ``data.probe.train.root`` of ``data=image_folder``; empty without probe splits."""
    if not isinstance(cfg, DictConfig) or cfg.get("probe") is None:
        return []
    keys = ["data." + key.removeprefix("data.") for key in OmegaConf.missing_keys(cfg)]
    return sorted(k for k in keys if k.startswith("data.probe."))


@dataclass
class Experiment:
    """Everything a training run needs, built from one config."""

    method: Method
    dataset: Any
    collate_fn: Callable


def regularization(cfg: Config) -> dict[str, Any]:
    """The method's anti-collapse regulariser arguments from ``cfg.method`` (``regularizer``,
    ``regularizer_weight``, ``regularize_on``; see :mod:`jepalab.methods.regularizers`)."""
    m = cfg.method
    knobs = {
        key: getattr(m, key)
        for key in (
            "sigreg_slices",
            "sigreg_knots",
            "sigreg_t_max",
            "vicreg_std_target",
            "vicreg_variance_weight",
            "vicreg_covariance_weight",
        )
    }
    return dict(
        regularizer=build_regularizer(m.regularizer, seed=cfg.trainer.seed, **knobs),
        regularizer_weight=regularizer_weight(m.regularizer, m.regularizer_weight),
        regularize_on=m.regularize_on,
    )


MASKED_METHODS: dict[str, type[IJEPA]] = {"ijepa": IJEPA, "vjepa": VJEPA}


def build_masked_method(cfg: Config) -> tuple[IJEPA, MaskGenerator]:
    """I-JEPA and V-JEPA build the same way: encoder, masks, predictor, EMA (or online)
    target; returns the method and its mask generator. Does not seed (see
    :func:`build_initial_method`)."""
    if cfg.method.name not in MASKED_METHODS:
        raise ValueError(
            f"method.name={cfg.method.name!r} is not a masked JEPA ({list(MASKED_METHODS)})"
        )
    encoder = build_encoder(cfg.encoder)
    masks = build_mask_generator(cfg.mask, encoder.grid_size)
    predictor = build_predictor(
        cfg.predictor, encoder, cfg.encoder.attn_backend, masks.num_mask_tokens
    )
    method = MASKED_METHODS[cfg.method.name](
        encoder,
        predictor,
        ema=tuple(cfg.method.ema),
        loss=cfg.method.loss,
        loss_exp=cfg.method.loss_exp,
        target=cfg.method.target,
        target_layers=cfg.method.target_layers,
        **regularization(cfg),
    )
    return method, masks


def build_initial_method(cfg: Config) -> IJEPA:
    """The I-JEPA / V-JEPA method of ``cfg`` with the weights ``jepalab train`` starts from
    (seeded by ``trainer.seed``, as :func:`build_experiment`), without building the data."""
    torch.manual_seed(cfg.trainer.seed)
    return build_masked_method(cfg)[0]


def _build_masked(cfg: Config) -> Experiment:
    method, masks = build_masked_method(cfg)
    collate = MaskCollator(masks, cfg.trainer.seed)
    dataset = build_dataset(cfg.data)
    check_data_fits_encoder(cfg, dataset)
    return Experiment(method, dataset, collate)


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


def build_action_model(
    cfg: Config, action_dim: int, state_dim: int, load_encoder: bool = True
) -> ActionConditioned:
    """Encoder + action-conditioned predictor for ``cfg`` (``method=action``).

    With ``load_encoder`` and ``method.encoder_checkpoint`` set, the encoder is the
    checkpoint's, and ``cfg.encoder`` is overwritten with its configuration so that the
    run's stored config describes the encoder it really used. ``load_encoder=False`` builds
    ``cfg.encoder``'s shape only (the weights then come from an action-conditioned
    checkpoint, e.g. for planning).
    """
    m = cfg.method
    if load_encoder and m.encoder_checkpoint:
        encoder, enc_cfg = load_pretrained_encoder(m.encoder_checkpoint)
        for key, value in asdict(enc_cfg).items():
            setattr(cfg.encoder, key, value)
    else:
        if load_encoder and m.trainable_encoder_blocks == 0:
            log.warning(
                "method.encoder_checkpoint is not set: the action-conditioned predictor is "
                "trained on a randomly initialised frozen encoder"
            )
        encoder = build_encoder(cfg.encoder)
    p = cfg.predictor
    pooled = m.frame_pooling == "mean"  # one latent per frame (validated by the method)
    predictor = create_predictor(
        p.name,
        grid_size=(1, 1) if pooled else tuple(encoder.grid_size[-2:]),
        encoder_dim=encoder.embed_dim,
        action_dim=action_dim,
        state_dim=state_dim if m.use_states else 0,
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads or default_num_heads(encoder, p.embed_dim),
        drop_path_rate=p.drop_path_rate,
        attn_backend=cfg.encoder.attn_backend,
        # sincos unless predictor.pos_embed says otherwise (V-JEPA 2-AC: rope)
        **predictor_positions(p.pos_embed or "sincos", encoder),
    )
    return ActionConditioned(
        encoder,
        predictor,
        auto_steps=m.auto_steps,
        loss_exp=m.loss_exp,
        trainable_encoder_blocks=m.trainable_encoder_blocks,
        use_states=m.use_states,
        frame_pooling=m.frame_pooling,
        target_grad=m.target_grad,
        smoothness_weight=m.smoothness_weight,
        inverse_dynamics_weight=m.inverse_dynamics_weight,
        **regularization(cfg),
    )


def _build_action(cfg: Config) -> Experiment:
    """V-JEPA 2-AC: trajectory windows, a pretrained frozen encoder, the AC predictor."""
    dataset = build_dataset(cfg.data)
    for attr in ("action_dim", "state_dim"):
        if not hasattr(dataset, attr):
            raise ValueError(
                f"method=action needs a trajectory dataset (data.name=trajectories), got "
                f"data.name={cfg.data.name!r}"
            )
    if not cfg.method.encoder_checkpoint:  # a pretrained encoder brings its own channels
        check_data_fits_encoder(cfg, dataset)
    method = build_action_model(cfg, dataset.action_dim, dataset.state_dim)
    return Experiment(method, dataset, collate_trajectories)


METHODS: dict[str, Callable[[Config], Experiment]] = {
    "ijepa": _build_masked,
    "vjepa": _build_masked,
    "action": _build_action,
}


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
    """Pretrain as configured, then (``eval.probe``) probe the frozen encoder.

    Returns a summary with the final loss and the probe table.
    """
    validate_config(cfg)  # counts, ranges and names, each error naming its key
    if cfg.eval.probe not in PROBES:
        raise ValueError(f"eval.probe={cfg.eval.probe!r} is not one of {PROBES}")
    unset = unset_probe_keys(cfg.data) if cfg.eval.probe != "none" else []
    if unset:  # said before training, not after it; the command still trains as typed
        log.warning(
            "no probe after training: %s %s not set (e.g. jepalab train %s=/path/to/labelled/"
            "data); eval.probe=none silences this",
            ", ".join(unset),
            "is" if len(unset) == 1 else "are",
            unset[0],
        )
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    exp = build_experiment(cfg)  # may fill in cfg (the pretrained encoder's configuration)
    resolved = _plain(cfg)
    trainer = build_trainer(cfg, exp, resolved)  # joins the process group of a launcher
    try:
        if trainer.dist.is_main:
            accept_run(run_dir, resolved, trainer.resume_state())
            log.info(
                "run %s: %d steps (%d per epoch) of %d samples (%d process(es) x %d "
                "accumulation step(s) x %d), %.1fM trainable parameters, device %s",
                run_dir,
                trainer.last_step,
                trainer.steps_per_epoch,
                trainer.batch_size,
                trainer.dist.world_size,
                trainer.accum_steps,
                trainer.micro_batch_size,
                sum(p.numel() for p in exp.method.parameters() if p.requires_grad) / 1e6,
                trainer.device,
            )
        losses = trainer.fit()
    finally:
        trainer.close()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": trainer.step}
    if losses:
        summary["final_loss"] = losses[-1]
    if not trainer.dist.is_main:  # one process probes and writes the results
        return summary
    encoder = exp.method.eval_encoder
    if trainer.sharded:  # the trained modules hold shards; probe the full checkpoint
        encoder = load_run(run_dir, trainer.device).method.eval_encoder
    if cfg.eval.probe != "none" and cfg.data.probe is not None and not unset:
        results, splits = probe(cfg, encoder, trainer.device)
        table = format_table(results)
        kind = "Linear probe" if cfg.eval.probe == "linear" else "Attentive probe"
        print(f"\n{kind} on frozen features (held-out split):\n" + table, flush=True)
        summary["probe"] = {k: asdict(v) for k, v in results.items()}
        summary["probe_splits"] = splits
        report = {**summary["probe"], "splits": splits}
        (run_dir / "probe.json").write_text(json.dumps(report, indent=2))
    return summary


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
    sets = {split: build_dataset(cfg.data, **_plain(cfg.data.probe[split])) for split in SPLITS}
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


def _plain(node: Any) -> Any:
    """A DictConfig/dataclass section as plain Python containers."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if hasattr(node, "__dataclass_fields__"):
        return asdict(node)
    return node
