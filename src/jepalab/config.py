"""The configuration schema: one dataclass per Hydra config group.

Hydra validates every YAML file and command-line override against these dataclasses, so a
misspelt key fails at start-up with a message naming it (``Key 'lrr' not in 'OptimConfig'``).
Defaults here are the I-JEPA paper's; the YAML files under ``configs/`` cite their sources
(V-JEPA recipes override them through their own config group entries).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    """What every encoder's section has: a registered encoder (``jepalab.models.
    list_encoders()``), its input and token grid, and the training switches.

    Each encoder family has its own schema with its shape keys (:class:`ViTEncoderConfig`,
    :class:`ConvNeXtEncoderConfig`, or one registered with :func:`register_schema`); the YAML
    files in ``configs/encoder/`` start from it, so a ViT key given to a ConvNeXt is an error
    naming it."""

    name: str = MISSING
    img_size: int = 224
    in_chans: int = 3
    patch_size: int | None = None  # stride of the token (mask) grid; None: the model's
    num_frames: int = 1  # > 1: a video encoder over tubelets (V-JEPA: 16)
    tubelet_size: int = 2  # frames per tubelet (V-JEPA: 2)
    drop_path_rate: float = 0.0
    attn_backend: str = "auto"  # of the encoder's and the predictor's attention
    grad_checkpointing: bool = False  # activation checkpointing of every block


@dataclass
class ViTEncoderConfig(EncoderConfig):
    """A Vision Transformer (``configs/encoder/vit_*.yaml``); ``None``: the named size's."""

    name: str = "vit_tiny_patch16"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    pos_embed: str = "sincos"  # sincos (I-JEPA, V-JEPA) | rope (V-JEPA 2)
    # rope only: rotate channels as V-JEPA 2's release does (two angles per pair, its
    # `.repeat` quirk) instead of true pairwise rotations; needed to export to vjepa2 /
    # vjepa2_ac, which no reordering of weights trained the other way can reproduce
    rope_reference_layout: bool = False


@dataclass
class ConvNeXtEncoderConfig(EncoderConfig):
    """A ConvNeXt V1/V2 (``configs/encoder/convnext*.yaml``; docs/convnext.md): widths and
    blocks per stage, ``None``: the named size's."""

    name: str = "convnext_atto"
    dims: list[int] | None = None
    depths: list[int] | None = None


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
    """What every mask generator's section has (``masks.build.MASKS``). Each family has its
    own schema, a subclass: :class:`Mask2DConfig` (I-JEPA's multi-block and its Table 6
    alternatives), :class:`Mask3DConfig` (V-JEPA's 3-D multi-block)."""

    name: str = MISSING
    min_keep: int = 10  # tokens every context keeps at least
    trim_to_batch_min: bool = False  # reference parity only: drops tokens
    reference_quirks: bool = False  # reference parity only: its sampler's biases


@dataclass
class Mask2DConfig(MaskConfig):
    """2-D masks of an image grid: ``multiblock`` (I-JEPA ``configs/in1k_vith14_ep300.yaml``)
    and ``rasterized | block | random`` (I-JEPA Table 6)."""

    name: str = "multiblock"
    context_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    target_scale: list[float] = field(default_factory=lambda: [0.15, 0.2])
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])
    num_targets: int = 4
    allow_overlap: bool = False


@dataclass
class Mask3DConfig(MaskConfig):
    """V-JEPA's 3-D multi-block masks (``multiblock3d``): one mask configuration per entry
    of ``blocks``, each with its own context and mask token."""

    name: str = "multiblock3d"
    blocks: list[BlockMaskConfig] = field(default_factory=list)


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
    """What every training objective's section has: its registered name (``methods.build.
    METHODS``), the exponent of its loss, and the anti-collapse regulariser
    (jepalab.methods.regularizers; docs/regularizers.md).

    Each method family has its own schema, a subclass with its own keys
    (:class:`MaskedMethodConfig`, :class:`ActionMethodConfig`, or one a new method registers
    with :func:`register_schema`); its YAML files start from it (``defaults:
    [masked_schema, _self_]``), so a key that only another method reads is an error naming it.
    """

    name: str = MISSING
    loss_exp: float = 1.0  # exponent p of the l1 loss |d|^p / p (V-JEPA loss_exp)
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


@dataclass
class MaskedMethodConfig(MethodConfig):
    """Masked-latent prediction against a target encoder: I-JEPA, V-JEPA (2, 2.1), LeJEPA's
    online target (``configs/method/{ijepa,vjepa,vjepa2,vjepa2_1,lejepa}.yaml``)."""

    name: str = "ijepa"  # ijepa | vjepa
    loss: str = "smooth_l1"  # smooth_l1 (I-JEPA) | l1 (V-JEPA) | mse
    ema: list[float] = field(default_factory=lambda: [0.996, 1.0])  # I-JEPA momentum schedule
    target_layers: int = 1  # targets: 1 = last layer (paper) | L = mean of last L (ViT only)
    # V-JEPA 2.1's dense predictive loss (docs/dense_loss.md; off by default):
    dense_levels: int = 1  # encoder blocks supervised side by side (2.1: 4) | 1 = last only
    context_loss_weight: float = 0.0  # λ of the context-token loss (2.1: 0.5) | 0 = off
    context_loss_ramp: list[int] = field(default_factory=lambda: [0, 0])  # λ from 0, steps
    context_loss_distance_weighting: bool = False  # 1/sqrt(distance to the masked region)
    target: str = "ema"  # ema (I-JEPA/V-JEPA) | online: the context encoder, no gradient


@dataclass
class ActionMethodConfig(MethodConfig):
    """The action-conditioned world model: V-JEPA 2-AC, and LeWM / PLDM-style end-to-end
    training (``configs/method/action.yaml``)."""

    name: str = "action"
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


# group -> {name (or fnmatch pattern) of the option's component (``<group>.name``) -> its
# schema}: the config groups whose options have schemas of their own (one per family), read
# back by config_from_checkpoint
SCHEMAS: dict[str, dict[str, type]] = {"encoder": {}, "method": {}, "mask": {}}
SCHEMA_BASES: dict[str, type] = {
    "encoder": EncoderConfig,
    "method": MethodConfig,
    "mask": MaskConfig,
}


def register_schema(group: str, family: str, schema: type, names: tuple[str, ...] = ()) -> None:
    """Make ``schema`` the config schema of the components ``names`` (``<group>.name``, or
    fnmatch patterns such as ``"vit_*"``; default ``(family,)``) of ``group`` (``"encoder"``,
    ``"method"`` or ``"mask"``).

    Their YAML files in ``configs/<group>/`` start from it with ``defaults:
    [<family>_schema, _self_]``, so every key is typed and a key of another family is an
    error naming it; checkpoints are read back through it. Call it in the component's
    module, next to its builder's registration, before composing a config.
    """
    if group not in SCHEMA_BASES:
        raise ValueError(f"group {group!r} has no schemas per option; one of {list(SCHEMAS)}")
    if not (isinstance(schema, type) and issubclass(schema, SCHEMA_BASES[group])):
        raise TypeError(f"{schema!r} must subclass {SCHEMA_BASES[group].__name__}")
    for name in names or (family,):
        SCHEMAS[group][name] = schema
    ConfigStore.instance().store(group=group, name=f"{family}_schema", node=schema)


def schema_for(group: str, name: Any) -> type | None:
    """The schema registered for component ``name`` of ``group`` (an exact name first, then
    the first matching pattern), or ``None``."""
    schemas = SCHEMAS[group]
    if name in schemas:
        return schemas[name]
    if isinstance(name, str):
        for pattern, schema in schemas.items():
            if fnmatchcase(name, pattern):
                return schema
    return None


def schema_mismatch(group: str, section: Any) -> tuple[type, type] | None:
    """``(given, expected)`` when ``section`` (a composed section or a dataclass) does not
    have the schema registered for its ``name`` (e.g. a ViT section renamed to a ConvNeXt),
    else ``None``."""
    given = OmegaConf.get_type(section) if isinstance(section, DictConfig) else type(section)
    expected = schema_for(group, section.name)
    if expected is None or given is None or issubclass(given, expected):
        return None
    return given, expected


register_schema("encoder", "vit", ViTEncoderConfig, ("vit_*",))
register_schema("encoder", "convnext", ConvNeXtEncoderConfig, ("convnext_*", "convnextv2_*"))
register_schema("method", "masked", MaskedMethodConfig, names=("ijepa", "vjepa"))
register_schema("method", "action", ActionMethodConfig)
register_schema("mask", "mask2d", Mask2DConfig, ("multiblock", "rasterized", "block", "random"))
register_schema("mask", "mask3d", Mask3DConfig, ("multiblock3d",))


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
    max_steps: int | None = None  # stop early (the schedules still span `epochs`, unless:)
    schedule_to_max_steps: bool = False  # the LR / WD / EMA schedules end at max_steps
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
    # collapse monitors (jepalab.train.collapse): RankMe, feature std, cosine between samples,
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
    encoder: EncoderConfig = MISSING  # the schema of the chosen encoder (SCHEMAS['encoder'])
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    mask: MaskConfig = MISSING  # the schema of the chosen generator (SCHEMAS['mask'])
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = MISSING  # the schema of the chosen method (SCHEMAS["method"])
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
    :func:`jepalab.cli.train.train`. Unknown keys and bad values raise naming the key.
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    extra = [f"experiment={experiment}"] if experiment else []
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=extra + list(overrides or []))


# ------------------------------------------------------------------ stored configurations
def config_from_checkpoint(state: dict, file: Path) -> DictConfig:
    """The :class:`Config` stored in a training checkpoint, validated against the schema;
    its ``encoder``, ``method`` and ``mask`` sections against the schema of their component
    (:data:`SCHEMAS`).

    Keys this version does not know are dropped with a warning; keys of the one flat schema
    of earlier versions that the component never read are dropped silently."""
    stored = state.get("config")
    if not stored:
        raise ValueError(f"{file} holds no run configuration; is it a jepalab checkpoint?")
    schema = OmegaConf.structured(Config)
    dropped: list[str] = []
    stored = dict(stored)
    for group, schemas in SCHEMAS.items():
        if not stored.get(group):
            continue  # not stored: the section stays unset
        section = dict(stored[group])
        name = section.get("name")
        section_schema = schema_for(group, name)
        if section_schema is None:
            log.warning(
                "%s: %s.name=%r has no registered config schema (import its module first); "
                "its own keys are ignored",
                file,
                group,
                name,
            )
            section_schema = SCHEMA_BASES[group]
        # keys of the one flat schema of earlier versions that this component never read
        others = {f.name for cls in schemas.values() for f in fields(cls)}
        keys = {f.name for f in fields(section_schema)}
        stored[group] = {k: v for k, v in section.items() if k in keys or k not in others}
        setattr(schema, group, OmegaConf.structured(section_schema))
    known = _known_keys(schema, stored, "", dropped)
    if dropped:
        log.warning(
            "%s: config keys unknown to this version of jepalab are ignored: %s",
            file,
            ", ".join(dropped),
        )
    return OmegaConf.merge(schema, known)


def _known_keys(schema: Any, stored: Any, prefix: str, dropped: list[str]) -> Any:
    """``stored`` without the keys that ``schema`` (a structured section) does not have."""
    if not isinstance(stored, dict) or not isinstance(schema, DictConfig):
        return stored
    if schema._metadata.object_type in (None, dict):  # a free-form dict (e.g. data.params)
        return stored
    out = {}
    for key, value in stored.items():
        if key not in schema:
            dropped.append(prefix + key)
            continue
        child = schema._get_node(key)
        out[key] = _known_keys(child, value, f"{prefix}{key}.", dropped)
    return out


def to_plain(node: Any) -> Any:
    """A DictConfig/dataclass section as plain Python containers."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if hasattr(node, "__dataclass_fields__"):
        return asdict(node)
    return node
