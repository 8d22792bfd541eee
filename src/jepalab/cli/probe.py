"""``jepalab eval probe``: frozen-feature probes of a trained I-JEPA / V-JEPA run.

    jepalab eval probe ckpt=runs/ijepa_digits                       # linear, k-NN, attentive
    jepalab eval probe ckpt=runs/x encoder=context probes=[linear,knn] max_train=2000

Loads the run (:func:`jepalab.runs.load_run`), extracts the features of its labelled
probe splits (``data.probe.train/test`` of the run's config) once per encoder -- the chosen
trained encoder and, with ``baselines=true``, raw pixels and a randomly initialised encoder of
the same shape -- and fits every requested probe on those cached features:

* ``linear``: logistic regression with its L2 penalty picked on validation
  (:func:`~jepalab.eval.fit_linear_probe`, the probe ``jepalab train`` prints), on pooled
  tokens;
* ``knn``: weighted k-NN (:func:`~jepalab.eval.fit_knn_probe`), on pooled tokens;
* ``attentive``: V-JEPA's attentive probe, a lr x weight-decay grid
  (:func:`~jepalab.eval.fit_attentive_probe`), on all tokens.

Every probe follows one protocol (:mod:`jepalab.eval.protocol`): hyper-parameters picked on a
validation part of the training split, the picked one fitted again on the whole split; the
test split is only used for the reported accuracy. Writes a JSON file (default
``<run_dir>/eval/probe.json``) and prints a table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset, Subset

from jepalab.checkpoint import resolve_checkpoint
from jepalab.cli.args import UsageError, check_output, describe_schema, parse_overrides
from jepalab.config import EvalConfig
from jepalab.data.build import build_dataset, unset_probe_keys
from jepalab.device import resolve_device
from jepalab.eval.features import CachedFeatures, extract_features
from jepalab.eval.knn import KNN_KS, KNN_TEMPERATURE
from jepalab.eval.linear_probe import L2_GRID, MAX_ITER
from jepalab.eval.probes import PROBES
from jepalab.eval.protocol import ProbeResult, format_hparams
from jepalab.models.build import build_encoder
from jepalab.runs import NO_CONFIG, LoadedRun, load_run

log = logging.getLogger(__name__)

PROG = "jepalab eval probe"
ENCODERS = ("target", "context")  # target: the EMA encoder (I-JEPA / V-JEPA evaluate it)
POOLINGS = ("mean", "max")
TRAIN_EVAL = EvalConfig()  # jepalab train's after-training probe settings, the defaults here


@dataclass
class LinearArgs:
    """The linear probe: L2 penalties tried on validation, L-BFGS iterations."""

    l2: list[float] = field(default_factory=lambda: list(L2_GRID))
    max_iter: int = MAX_ITER


@dataclass
class KnnArgs:
    k: list[int] = field(default_factory=lambda: list(KNN_KS))
    temperature: float = KNN_TEMPERATURE  # DINO's


@dataclass
class AttentiveArgs:
    """V-JEPA's attentive probe; the defaults are ``jepalab train``'s (``eval.attentive_*``)."""

    lr: list[float] = field(default_factory=lambda: list(TRAIN_EVAL.attentive_lr))
    weight_decay: list[float] = field(
        default_factory=lambda: list(TRAIN_EVAL.attentive_weight_decay)
    )
    epochs: int = TRAIN_EVAL.attentive_epochs
    batch_size: int = TRAIN_EVAL.attentive_batch_size
    heads: int = TRAIN_EVAL.attentive_heads
    depth: int = TRAIN_EVAL.attentive_depth  # 1: one cross-attention block (V-JEPA); 4: V-JEPA 2


@dataclass
class ProbeArgs:
    """``jepalab eval probe`` arguments (``key=value``)."""

    ckpt: str = MISSING  # a run directory (its newest checkpoint) or a checkpoint file
    probes: list[str] = field(default_factory=lambda: ["linear", "knn", "attentive"])
    encoder: str = "target"  # target (EMA; the paper's choice) | context (the online one)
    pooling: str = "mean"  # tokens -> one vector for linear / knn: mean | max
    baselines: bool = True  # also probe raw pixels and a random-init encoder of that shape
    max_train: int | None = None  # a seeded random subset of the training split
    max_test: int | None = None
    val_fraction: float = 0.2  # of the training split, for picking hyper-parameters
    batch_size: int = 256  # feature extraction
    device: str = "auto"  # auto: cuda if available, else cpu
    seed: int = 0
    progress: bool = True
    out: str | None = None  # default: <run_dir>/eval/probe.json
    linear: LinearArgs = field(default_factory=LinearArgs)
    knn: KnnArgs = field(default_factory=KnnArgs)
    attentive: AttentiveArgs = field(default_factory=AttentiveArgs)


def usage() -> str:
    return (
        f"usage: {PROG} ckpt=RUN_DIR_OR_CHECKPOINT [key=value ...]\n\n"
        "Probes a trained I-JEPA / V-JEPA run's frozen encoder on its labelled probe splits.\n"
        f"  probes:    any of {', '.join(PROBES)} (linear: the probe `jepalab train` prints)\n"
        f"  encoder:   {' | '.join(ENCODERS)} (target: the EMA encoder, the papers' choice)\n"
        f"  pooling:   {' | '.join(POOLINGS)} over tokens for linear / knn; attentive "
        "reads all tokens\n"
        "  baselines: also probe raw pixels and a random-init encoder of the same shape\n"
        "  out:       the JSON report; default <run_dir>/eval/probe.json\n\n"
        "keys (defaults):\n" + "\n".join(describe_schema(ProbeArgs))
    )


def check_args(args: ProbeArgs) -> None:
    """Raise :class:`UsageError` naming the first key whose value is not allowed."""
    choices: list[tuple[str, Any, tuple]] = [
        ("encoder", args.encoder, ENCODERS),
        ("pooling", args.pooling, POOLINGS),
    ]
    choices += [("probes", p, tuple(PROBES)) for p in args.probes]
    for key, value, allowed in choices:
        if value not in allowed:
            raise UsageError(f"{PROG}: {key}={value!r} is not one of {list(allowed)}")
    if not args.probes:
        raise UsageError(f"{PROG}: probes is empty; choose from {list(PROBES)}")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"{PROG}: val_fraction={args.val_fraction} must be in (0, 1)")
    for key, grid in (
        ("linear.l2", args.linear.l2),
        ("knn.k", args.knn.k),
        ("attentive.lr", args.attentive.lr),
        ("attentive.weight_decay", args.attentive.weight_decay),
    ):
        if not grid:
            raise UsageError(f"{PROG}: {key} is empty; give at least one value")
    if args.linear.max_iter < 1:
        raise UsageError(f"{PROG}: linear.max_iter={args.linear.max_iter} must be at least 1")
    if any(l2 < 0 for l2 in args.linear.l2):
        raise UsageError(f"{PROG}: linear.l2={args.linear.l2}: penalties must be >= 0")


# ----------------------------------------------------------------------------- features


def capped(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``limit`` samples (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(dataset):  # type: ignore[arg-type]
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return Subset(dataset, order[:limit].sort().values.tolist())


def _reads(probe: str) -> str:
    return PROBES.get(probe).reads


def select_encoder(method: nn.Module, choice: str) -> nn.Module:
    """``target``: the EMA target encoder (I-JEPA / V-JEPA evaluate it); ``context``: the
    online context encoder, trained by gradient."""
    return method.target_encoder.module if choice == "target" else method.context_encoder


# ----------------------------------------------------------------------------- probes


def run_probe(
    name: str, train: CachedFeatures, test: CachedFeatures, args: ProbeArgs, device
) -> ProbeResult:
    """Fit the registered probe ``name`` (:data:`jepalab.eval.probes.PROBES`) on cached
    training features, with its section of the arguments; its accuracy on the test split."""
    probe = PROBES.get(name)
    return probe.fit(train, test, getattr(args, name, None), device, args.val_fraction, args.seed)


def pooling_notes(args: ProbeArgs) -> dict[str, str]:
    """What each requested probe reads, for the JSON and the table's title."""
    notes = {p: f"{args.pooling}-pooled tokens" for p in args.probes if _reads(p) == "pooled"}
    notes.update({p: "all tokens" for p in args.probes if _reads(p) == "tokens"})
    if "attentive" in args.probes:
        notes["attentive"] = "all tokens (learned cross-attention pooling)"
    if args.baselines:
        notes["raw pixels"] = "flattened pixels (pooled probes), pixel patch tokens (attentive)"
    return notes


def format_probe_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """``features | probe | test | val | train | hparams``, one row per (features, probe)."""
    rows = [
        (features, probe, r)
        for features, by_probe in results.items()
        for probe, r in by_probe.items()
    ]
    fw = max(len("features"), *(len(f) for f, _, _ in rows)) + 2
    pw = max(len("probe"), *(len(p) for _, p, _ in rows)) + 2
    header = f"{'features':<{fw}}{'probe':<{pw}}{'test':>7}{'val':>7}{'train':>7}  hparams"
    lines = [header, "-" * (len(header) + 14)]

    def percent(value: float | None) -> str:  # None: a one-point grid, nothing was selected
        return f"{'-':>7}" if value is None else f"{100 * value:>6.1f}%"

    for features, probe, r in rows:
        accs = "".join(percent(r[k]) for k in ("test_accuracy", "val_accuracy"))
        lines.append(
            f"{features:<{fw}}{probe:<{pw}}{accs}{100 * r['train_accuracy']:>6.1f}%"
            f"  {format_hparams(r['hparams'])}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def run_dir_of_checkpoint(ckpt: str | Path, file: Path) -> Path:
    """The run directory: ``ckpt`` itself when it is one, else the checkpoint's run."""
    path = Path(ckpt)
    if path.is_dir():
        return path.parent if path.name == "checkpoints" else path
    return file.parent.parent if file.parent.name == "checkpoints" else file.parent


def probe_splits(cfg: DictConfig, args: ProbeArgs) -> dict[str, Dataset]:
    """The run's labelled ``train`` / ``test`` probe splits, capped at ``max_train/max_test``."""
    if cfg.data.get("probe") is None:
        raise UsageError(
            f"{PROG}: the run's data (data.name={cfg.data.name}) has no labelled probe splits "
            "(data.probe.train/test); nothing to probe"
        )
    unset = unset_probe_keys(cfg.data)
    if unset:
        raise UsageError(
            f"{PROG}: the run was trained without probe splits ({', '.join(unset)} not set); "
            "nothing to probe"
        )
    limits = {"train": args.max_train, "test": args.max_test}
    return {
        split: capped(
            build_dataset(cfg.data, **OmegaConf.to_container(cfg.data.probe[split], resolve=True)),
            limit,
            args.seed,
        )
        for split, limit in limits.items()
    }


def feature_sources(
    run: LoadedRun, args: ProbeArgs, device: torch.device
) -> dict[str, tuple[nn.Module, bool]]:
    """``{row name: (encoder, raw_pixels)}``: the chosen trained encoder and, with
    ``baselines``, raw pixels (in its patch grid) and a random-init encoder of the same shape
    (the one ``jepalab train`` probes)."""
    trained = select_encoder(run.method, args.encoder)
    sources = {f"{args.encoder} encoder": (trained, False)}
    if args.baselines:
        sources["raw pixels"] = (trained, True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.cfg.trainer.seed + 1)
            random_init = build_encoder(run.cfg.encoder).to(device).eval()
        sources["random-init encoder"] = (random_init, False)
    return sources


def probe_features(
    name: str, train: CachedFeatures, test: CachedFeatures, args: ProbeArgs, device
) -> dict[str, dict[str, Any]]:
    """Every requested probe on one encoder's cached features: ``{probe: result dict}``."""
    results = {}
    for probe in args.probes:
        start = time.perf_counter()
        result = run_probe(probe, train, test, args, device)
        seconds = time.perf_counter() - start
        log.info("%s / %s: test %.1f%% (%.1fs)", name, probe, 100 * result.test_accuracy, seconds)
        results[probe] = result.to_dict() | {"seconds": round(seconds, 2)}
    return results


def probe_run(args: ProbeArgs, out: Path | None = None) -> dict[str, Any]:
    """Load the run, cache features once per encoder, fit every probe: the JSON report.

    With ``out``, the report so far is also written there after each encoder's probes
    (``"complete": false`` until the last), so an interrupted evaluation keeps its results.
    """
    check_args(args)
    device = resolve_device(args.device, key="device")
    try:
        run = load_run(args.ckpt, device)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"{PROG}: ckpt={args.ckpt}: {exc}") from None
    except RuntimeError as exc:  # strict load_state_dict: keys of another jepalab version
        if "loading state_dict" not in str(exc):
            raise
        raise UsageError(
            f"{PROG}: ckpt={args.ckpt}: its weights do not match the modules its config builds "
            f"(a checkpoint of an older jepalab?): {' '.join(str(exc).split())}"
        ) from None
    if run.cfg is None:
        raise UsageError(f"{PROG}: ckpt={args.ckpt}: {run.file} {NO_CONFIG}")
    splits = probe_splits(run.cfg, args)
    results, shapes = {}, {}
    for name, (encoder, raw_pixels) in feature_sources(run, args, device).items():
        start = time.perf_counter()
        train, test = (
            extract_features(
                encoder,
                splits[split],
                raw_pixels=raw_pixels,
                pooled=any(_reads(p) == "pooled" for p in args.probes),
                tokens=any(_reads(p) == "tokens" for p in args.probes),
                pooling=args.pooling,
                batch_size=args.batch_size,
                device=device,
                desc=f"{name}: {split} features",
                progress=args.progress,
            )
            for split in ("train", "test")
        )
        log.info("%s: features in %.1fs", name, time.perf_counter() - start)
        shapes[name] = {
            kind: list(x.shape[1:])
            for kind, x in (("pooled", train.pooled), ("tokens", train.tokens))
            if x is not None
        }
        results[name] = probe_features(name, train, test, args, device)
        if out is not None:
            report = _report(args, run, splits, train, test, shapes, results)
            out.write_text(json.dumps(report | {"complete": False}, indent=2))
    report = _report(args, run, splits, train, test, shapes, results)
    for split, count in report["data"]["skipped"].items():
        if count:
            log.warning("%s split: %d unreadable samples skipped", split, count)
    return report | {"complete": True}


def _report(args, run, splits, train, test, shapes, results) -> dict[str, Any]:
    """The JSON report of the encoders probed so far."""
    # unreadable files, the same for every encoder (the warnings name them)
    kept = {"train": len(train.labels), "test": len(test.labels)}
    skipped = {split: len(splits[split]) - n for split, n in kept.items()}  # type: ignore[arg-type]
    return {
        "run": str(run_dir_of_checkpoint(args.ckpt, run.file)),
        "checkpoint": str(run.file),
        "step": run.step,
        "method": run.cfg.method.name,
        "encoder": args.encoder,
        "encoder_name": run.cfg.encoder.name,
        "pooling": pooling_notes(args),
        "data": {
            "name": run.cfg.data.name,
            "train": len(train.labels),
            "test": len(test.labels),
            "num_classes": int(max(train.labels.max(), test.labels.max())) + 1,
            "skipped": skipped,
        },
        "feature_shapes": shapes,
        "results": results,
        "args": asdict(args),
    }


def main(argv: list[str]) -> int:
    """``jepalab eval probe key=value ...``: exit 0, or :class:`UsageError` (exit 2)."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage())
        return 0
    args = parse_overrides(argv, ProbeArgs, PROG, positional="ckpt")
    check_args(args)
    file = resolve_checkpoint(args.ckpt)  # before the output: a wrong ckpt makes no folder
    default = run_dir_of_checkpoint(args.ckpt, file) / "eval" / "probe.json"
    out = check_output(args.out or default, "out=FILE")  # before any compute
    report = probe_run(args, out)
    out.write_text(json.dumps(report, indent=2))
    notes = "".join(f"\n  {k}: {v}" for k, v in report["pooling"].items())
    print(
        f"\nFrozen-feature probes of {report['run']} (step {report['step']}, "
        f"{report['encoder']} encoder); held-out accuracy, hparams picked on val:{notes}\n\n"
        + format_probe_table(report["results"])
        + f"\n\nwrote {out}",
        flush=True,
    )
    return 0
