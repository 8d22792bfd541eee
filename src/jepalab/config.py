"""The configuration schema: one dataclass per Hydra config group.

Hydra validates every YAML file and command-line override against these dataclasses, so a
misspelt key fails at start-up with a message naming it (``Key 'lrr' not in 'OptimConfig'``).
Defaults here are the I-JEPA paper's; the YAML files under ``configs/`` cite their sources
(V-JEPA recipes override them through their own config group entries).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import ListConfig, OmegaConf

from jepalab.errors import ConfigError


@dataclass
class EncoderConfig:
    """A registered encoder (``jepalab.models.list_encoders()``) and overrides of its shape."""

    name: str = "vit_tiny_patch16"
    img_size: int = 224
    in_chans: int = 3
    patch_size: int | None = None  # stride of the token (mask) grid; None: the model's
    # ViT shape overrides (ignored, with a warning, by ConvNeXt encoders)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    # ConvNeXt shape overrides: widths and blocks per stage (None: the named size's)
    dims: list[int] | None = None
    depths: list[int] | None = None
    drop_path_rate: float = 0.0
    attn_backend: str = "auto"
    grad_checkpointing: bool = False  # activation checkpointing of every block
    num_frames: int = 1  # > 1: a video ViT over tubelets (V-JEPA: 16)
    tubelet_size: int = 2  # frames per tubelet (V-JEPA: 2)
    pos_embed: str = "sincos"  # sincos (I-JEPA, V-JEPA) | rope (V-JEPA 2)
    # rope only: rotate channels as V-JEPA 2's release does (two angles per pair, its
    # `.repeat` quirk) instead of true pairwise rotations; needed to export to vjepa2 /
    # vjepa2_ac, which no reordering of weights trained the other way can reproduce
    rope_reference_layout: bool = False


@dataclass
class PredictorConfig:
    """The masked-latent predictor (I-JEPA: width 384, depth 12 for ViT-H, 6 for smaller)."""

    name: str = "masked_vit_predictor"
    embed_dim: int = 384
    depth: int = 12
    num_heads: int | None = None  # None: the encoder's number of heads, as in I-JEPA
    drop_path_rate: float = 0.0
    pos_embed: str | None = None  # None: the encoder's (sincos | rope)


@dataclass
class BlockMaskConfig:
    """One V-JEPA mask configuration (an entry of ``cfgs_mask`` in the V-JEPA configs)."""

    num_blocks: int = 8
    spatial_scale: list[float] = field(default_factory=lambda: [0.15, 0.15])
    temporal_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])
    max_temporal_keep: float = 1.0


@dataclass
class MaskConfig:
    """Multi-block masks: ``multiblock`` (I-JEPA ``configs/in1k_vith14_ep300.yaml``) or
    ``multiblock3d`` (V-JEPA; its mask configurations are the entries of ``blocks``)."""

    name: str = "multiblock"
    context_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    target_scale: list[float] = field(default_factory=lambda: [0.15, 0.2])
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])
    num_targets: int = 4
    min_keep: int = 10
    allow_overlap: bool = False
    trim_to_batch_min: bool = False  # reference parity only: drops tokens
    reference_quirks: bool = False  # reference parity only: its sampler's biases
    blocks: list[BlockMaskConfig] = field(default_factory=list)  # multiblock3d only


@dataclass
class ProbeDataConfig:
    """Labelled splits for the probe after training; entries override ``data.params``.

    ``data.probe=null`` (or ``eval.probe=none``): no probe. A data config whose splits need a
    value of the user (``data=image_folder``: ``root: ???``) lists the keys, so that
    ``data.probe.train.root=DIR`` works on the command line (a null ``data.probe`` cannot be
    filled in key by key).
    """

    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """A registered dataset (``jepalab.data.list_datasets()``) and its loader."""

    name: str = "digits_canvas"
    params: dict[str, Any] = field(default_factory=dict)
    # channels the data yields (1 grey, 3 RGB); encoder.in_chans follows it (configs/config.yaml)
    channels: int = 3
    batch_size: int = 128
    num_workers: int = 0
    probe: ProbeDataConfig | None = None


@dataclass
class MethodConfig:
    """The training objective."""

    name: str = "ijepa"  # ijepa | vjepa | action
    loss: str = "smooth_l1"  # smooth_l1 (I-JEPA) | l1 (V-JEPA) | mse
    loss_exp: float = 1.0  # exponent p of the l1 loss |d|^p / p (V-JEPA loss_exp)
    ema: list[float] = field(default_factory=lambda: [0.996, 1.0])  # I-JEPA momentum schedule
    target_layers: int = 1  # targets: 1 = last layer (paper) | L = mean of last L (ViT only)
    # anti-collapse (jepalab.methods.regularizers; docs/regularizers.md):
    target: str = "ema"  # ema (I-JEPA/V-JEPA) | online: the context encoder, no gradient
    regularizer: str = "none"  # none | sigreg (LeJEPA) | vicreg (variance + covariance terms)
    # λ in (1 - λ) * prediction + λ * regulariser; None: sigreg 0.05 (LeJEPA), vicreg 0.5
    regularizer_weight: float | None = None
    regularize_on: str = "pooled"  # pooled (mean per context: LeJEPA) | tokens (every token)
    sigreg_slices: int = 256  # random 1-D projections per step (LeJEPA: 256)
    sigreg_knots: int = 17  # trapezoid knots of the Epps-Pulley integral (LeJEPA: 17)
    sigreg_t_max: float = 3.0  # integration range [0, t_max] (LeJEPA: 3)
    vicreg_std_target: float = 1.0  # gamma of the variance hinge (VICReg: 1)
    vicreg_variance_weight: float = 1.0  # (VICReg mu / lambda = 25 / 25)
    vicreg_covariance_weight: float = 0.04  # (VICReg nu / lambda = 1 / 25)
    # action-conditioned (V-JEPA 2-AC) only:
    encoder_checkpoint: str | None = None  # an I-JEPA/V-JEPA run dir or checkpoint file
    auto_steps: int = 2  # rollout-loss steps (V-JEPA 2-AC: 2)
    trainable_encoder_blocks: int = 0  # 0 frozen (paper), k: last k blocks, -1: all
    use_states: bool = False  # feed proprioceptive states as a token per step
    # none: every patch token of a frame (V-JEPA 2-AC) | mean: one pooled token per frame
    frame_pooling: str = "none"
    # false: targets without gradient (V-JEPA 2-AC) | true: end to end (LeWorldModel)
    target_grad: bool = False
    # PLDM's extra terms (Sobal et al. 2025), 0 = off; both need a trainable encoder:
    smoothness_weight: float = 0.0  # mean |z_{t+1} - z_t|^2 between consecutive frames
    inverse_dynamics_weight: float = 0.0  # MLP [z_t, z_{t+1}] -> a_t, normalised MSE


@dataclass
class OptimConfig:
    """AdamW with warmup + cosine LR and cosine WD (I-JEPA ViT-H/14 recipe)."""

    lr: float = 1.0e-3
    start_lr: float = 2.0e-4
    final_lr: float = 1.0e-6
    warmup_epochs: float = 40
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    clip_grad: float | None = None  # I-JEPA does not clip; V-JEPA clips at 10


@dataclass
class WandbConfig:
    mode: str = "disabled"  # disabled | offline | online
    project: str = "jepalab"
    entity: str | None = None


@dataclass
class TrainerConfig:
    """The training loop shared by every method."""

    epochs: float = 300
    max_steps: int | None = None  # stop early (the schedules still span `epochs`)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    log_every: int = 10
    ckpt_every: int = 500  # steps; the last step is always saved
    keep_last: int = 3  # 0: keep every checkpoint
    resume: bool = True  # continue from the newest checkpoint of the run directory
    progress: bool = True
    # unreadable samples (each replaced in its batch by another) allowed, as a fraction of
    # the samples drawn (at least 100 counted)
    max_bad_sample_fraction: float = 0.01
    threads: int | None = None  # torch CPU threads; None: torch's default
    # collapse monitors (jepalab.eval.collapse): RankMe, feature std, cosine between samples,
    # prediction error per mask type, on the batch of every monitor_every-th step (0: off)
    monitor_every: int = 50
    rank_warning: float = 0.05  # warn when RankMe < this fraction of its maximum min(n, D)
    # data.batch_size is the global batch of one optimiser step; every process runs
    # accum_steps forward/backward passes of batch_size / (processes * accum_steps) samples
    accum_steps: int = 1
    distributed: str = "auto"  # auto: DDP when torchrun/SLURM start > 1 process | off
    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard: parameters sharded over ranks)
    dist_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    find_unused_parameters: bool = False  # DDP's flag, for methods that skip parameters
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvalConfig:
    """Frozen-feature evaluation after training, on ``data.probe``'s labelled splits."""

    probe: str = "linear"  # linear (I-JEPA, pooled) | attentive (V-JEPA) | none
    batch_size: int = 256
    attentive_epochs: int = 20
    attentive_batch_size: int = 128
    attentive_heads: int = 4
    attentive_depth: int = 1  # 1: one cross-attention block (V-JEPA); 4: V-JEPA 2's probe
    # (lr, weight decay) grid, picked on a validation part of the training split; a single
    # pair is trained once on the whole training split
    attentive_lr: list[float] = field(default_factory=lambda: [1.0e-3, 3.0e-4])
    attentive_weight_decay: list[float] = field(default_factory=lambda: [0.01, 0.1])


@dataclass
class Config:
    """A whole experiment."""

    name: str = "default"
    run_dir: str | None = None  # None: runs/<name> (Hydra's output directory)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _first_set(value: Any, default: Any) -> Any:
    return default if value is None else value


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore and the ``jepalab.first_set`` resolver
    (``${jepalab.first_set:${run_dir},runs/${name}}``: Hydra writes its files into the run
    directory that was asked for, not into ``runs/<name>`` beside it). Idempotent."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("jepalab.first_set"):
        OmegaConf.register_new_resolver("jepalab.first_set", _first_set)


def config_dir() -> Path:
    """The ``configs/`` directory: inside an installed wheel, or at the repository top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"jepalab's configs/ directory was not found next to {here}; reinstall the package"
    )


def compose_config(overrides: list[str] | None = None, experiment: str | None = None):
    """The configuration ``jepalab train`` would run, composed from Python (notebooks,
    scripts): ``compose_config(["trainer.max_steps=100"], experiment="ijepa_digits")``.

    Returns the validated ``DictConfig`` (schema :class:`Config`); pass it to
    :func:`jepalab.experiment.train`. Unknown keys and bad values raise naming the key.
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    extra = [f"experiment={experiment}"] if experiment else []
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=extra + list(overrides or []))


# ------------------------------------------------------------------------------ validation

PRECISIONS = ("auto", "fp32", "bf16")
WANDB_MODES = ("disabled", "offline", "online")
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def validate_config(cfg: Any) -> None:
    """Check what the schema's types cannot: counts >= 1, fractions and scale ranges in
    range, names of enum-like strings. ``cfg`` is a composed ``DictConfig`` or a
    :class:`Config`.

    Raises :class:`~jepalab.errors.ConfigError` naming the first bad key and its value, e.g.
    ``data.batch_size=0: must be >= 1``. ``jepalab train`` calls it right after composing the
    config, :func:`jepalab.experiment.train` again for configs built in Python.
    """
    for key, rule in _rules():
        value = _select(cfg, key)
        problem = rule(value)
        if problem:
            raise ConfigError(f"{key}={_show(value)}: {problem}")
    for i, block in enumerate(cfg.mask.blocks or []):
        for name, rule in _BLOCK_RULES:
            problem = rule(getattr(block, name))
            if problem:
                key = f"mask.blocks[{i}].{name}"
                raise ConfigError(f"{key}={_show(getattr(block, name))}: {problem}")
    _check_grid(cfg.encoder)


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
    define them (imported here: they import this module)."""
    from jepalab.experiment import MASKS, METHODS, PROBES
    from jepalab.kernels.attention import BACKENDS as ATTENTION_BACKENDS
    from jepalab.methods.action import FRAME_POOLING
    from jepalab.methods.ijepa import LOSSES, TARGETS
    from jepalab.methods.regularizers import REGULARIZE_ON, REGULARIZERS
    from jepalab.models.vit import POS_EMBEDS
    from jepalab.train.distributed import BACKENDS as DIST_BACKENDS
    from jepalab.train.distributed import MODES
    from jepalab.train.trainer import STRATEGIES

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


def _select(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)
