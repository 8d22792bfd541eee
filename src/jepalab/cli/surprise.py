"""``jepalab eval surprise ckpt=RUN [key=value ...]``: intuitive-physics surprise of a run.

Scores a trained V-JEPA run -- and, with ``baseline=true`` (default), the same network at its
initialisation (the run's config and seed, no training) -- on matched possible / impossible
moving-digit clips (:mod:`jepalab.data.physics`), and reports pairwise accuracy and AUROC per
event type (:mod:`jepalab.eval.surprise`). Writes ``<run>/eval/surprise.json`` (metrics, every
clip's surprise curve) and ``<run>/eval/surprise_pair.png`` (one pair per event type).

    jepalab eval surprise ckpt=runs/vjepa_moving_digits pairs=100
    jepalab eval surprise ckpt=RUN write_benchmark=physics.npz     # keep the clips fixed ...
    jepalab eval surprise ckpt=OTHER_RUN benchmark=physics.npz     # ... and reuse them
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig

from jepalab.checkpoint import resolve_checkpoint
from jepalab.cli.args import UsageError, check_output, describe_schema, parse_overrides
from jepalab.data.physics import EVENTS, PhysicsBenchmark, make_physics_benchmark
from jepalab.eval.surprise import (
    SCORES,
    Windows,
    context_use,
    event_windows,
    plot_surprise_pairs,
    sliding_windows,
    surprise_curves,
    surprise_metrics,
)
from jepalab.methods import IJEPA
from jepalab.methods.build import build_initial_method
from jepalab.runs import NO_CONFIG, load_run

PROG = "jepalab eval surprise"


@dataclass
class SurpriseArgs:
    """Keys of ``jepalab eval surprise``."""

    ckpt: str = MISSING  # run directory (newest checkpoint) or checkpoint file
    pairs: int = 100  # pairs per event type (when generating)
    events: list[str] = field(default_factory=lambda: list(EVENTS))
    clip_frames: int = 16  # frames per generated clip (longer than the encoder's window)
    context_frames: int | None = None  # default: half the encoder window
    stride: int = 1  # frames between windows (the release: the tubelet size, 2)
    score: str = "max"  # clip score of the table: max | mean | event_max | event_mean
    second_score: str = "mean"  # shown in brackets
    seed: int = 0  # benchmark seed
    balanced: bool = True  # also each pair's reverse (appear, brighten, ...): see docs
    split: str = "test"  # source digits of the generated clips (test: never trained on)
    benchmark: str | None = None  # an .npz to score instead of generating
    write_benchmark: str | None = None  # also save the (generated or loaded) clips here
    baseline: bool = True  # also score the untrained network of the same config and seed
    context_check: bool = True  # control: predict the possible clips from another clip's context
    mask_id: int = 0  # predictor mask token for the predicted frames (release: 0)
    batch_size: int = 64  # windows per forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out: str | None = None  # JSON path; default <run>/eval/surprise.json (+ surprise_pair.png)
    plot_pair: int = 0  # which pair of each event type the PNG shows
    progress: bool = True


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in args):
        print(__doc__ + "\nkeys (default):\n" + "\n".join(describe_schema(SurpriseArgs)))
        return 0
    opts = parse_overrides(args, SurpriseArgs, PROG, positional="ckpt")
    bad = [e for e in opts.events if e not in EVENTS]
    if bad or not opts.events:
        raise UsageError(f"{PROG}: events={opts.events}: choose from {list(EVENTS)}")
    if {opts.score, opts.second_score} - set(SCORES):
        raise UsageError(f"{PROG}: score / second_score: choose from {list(SCORES)}")
    # the outputs are checked before any compute (a wrong ckpt makes no folder)
    default = _run_dir(resolve_checkpoint(opts.ckpt)) / "eval" / "surprise.json"
    out = check_output(opts.out or default, "out=FILE")
    if opts.write_benchmark:
        check_output(opts.write_benchmark, "write_benchmark=FILE")
    device = _device(opts.device)
    run = load_run(opts.ckpt, device)
    if run.cfg is None:
        raise UsageError(f"{PROG}: {run.file} {NO_CONFIG}")
    encoder = run.method.context_encoder
    if getattr(encoder, "num_frames", 1) < 2:
        raise UsageError(f"{PROG}: {run.file} is an image run; surprise needs a video (V-JEPA) run")
    bench = _benchmark(opts, run.cfg)
    if opts.write_benchmark:
        _say(f"benchmark written to {bench.save(opts.write_benchmark)}")
    try:
        windows = sliding_windows(encoder, bench.clip_frames, opts.context_frames, opts.stride)
        selected = event_windows(windows, bench.event_frames)
    except ValueError as exc:
        raise UsageError(f"{PROG}: {exc}") from None

    models: dict[str, IJEPA] = {f"trained (step {run.step})": run.method}
    if opts.baseline:
        models["untrained"] = build_untrained(run.cfg).to(device)
    curves = {name: _score(method, bench, windows, opts, name) for name, method in models.items()}
    metrics = {
        name: surprise_metrics(pos, imp, bench.events, bench.violations(), selected)
        for name, (pos, imp) in curves.items()
    }
    print(format_surprise_table(metrics, len(bench), windows, opts.score, opts.second_score))
    checks = {}
    if opts.context_check:
        checks = {
            name: _context_check(method, bench, windows, opts, name, curves[name][0])
            for name, method in models.items()
        }
        print(format_context_check(checks))

    report = _report(opts, run, bench, windows, curves, metrics)
    report["context_check"] = checks
    out.write_text(json.dumps(report, indent=1))
    png = _plot(out.with_name(out.stem + "_pair.png"), bench, windows, curves, opts.plot_pair)
    _say(f"wrote {out} and {png}")
    return 0


def build_untrained(cfg: DictConfig) -> IJEPA:
    """The run's network at initialisation (Garrido et al.'s "untrained" baseline): the
    trained run's initial weights (:func:`~jepalab.methods.build.build_initial_method`), built
    without its data."""
    return build_initial_method(cfg).eval()


def format_surprise_table(
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]],
    pairs: int,
    windows: Windows,
    score: str = "max",
    second_score: str = "mean",
) -> str:
    """Event type x model: pairwise accuracy and AUROC with clip score ``score``
    (``second_score`` in brackets)."""
    models = list(metrics)
    groups = list(next(iter(metrics.values()))[score])
    head = f"{'event':<22} {'pairs':>5}" + "".join(f"  {m[:27]:>27}" for m in models)
    sub = f"{'':<22} {'':>5}" + "  {:>13} {:>13}".format("pair acc", "AUROC") * len(models)
    lines = [
        f"Intuitive-physics surprise: {pairs} pairs, windows of {windows.num_frames} frames "
        f"({windows.context_frames} context) at {list(windows.starts)}; "
        f"clip score: {score} over windows ({second_score} in brackets)",
        head,
        sub,
        "-" * len(sub),
    ]
    for group in groups:
        label = "  " + group.split(": ", 1)[1] if ": " in group else group
        row = f"{label:<22} {metrics[models[0]][score][group]['pairs']:>5}"
        for m in models:
            for key in ("pairwise_accuracy", "auroc"):
                values = [metrics[m][s][group][key] for s in (score, second_score)]
                row += f"  {values[0]:>5.1%} ({values[1]:>5.1%})"
        lines.append(row)
    return "\n".join(lines)


def format_context_check(checks: dict[str, dict[str, float]]) -> str:
    """One line per model: how much worse its predictor does from another clip's context."""
    lines = [
        "Context use: mean surprise of the possible clips predicted from the next clip's "
        "context, relative to their own\n(~0: the predictor ignores what its context shows, "
        "and the surprise measures the content of the predicted frames only)"
    ]
    for name, check in checks.items():
        lines.append(
            f"  {name:<27} {check['context_use']:+.3%}  "
            f"({check['other']:.5f} from another clip's context, {check['own']:.5f} own)"
        )
    return "\n".join(lines)


def _context_check(
    method: IJEPA,
    bench: PhysicsBenchmark,
    windows: Windows,
    opts: SurpriseArgs,
    name: str,
    own: torch.Tensor,
) -> dict[str, float]:
    """:func:`context_use` on the possible clips, each predicted from the context of the next
    clip in the benchmark (its pair's partner, e.g. the other path of a teleport)."""
    clips = bench.clips("possible")
    other = surprise_curves(
        method,
        clips,
        windows,
        opts.mask_id,
        opts.batch_size,
        opts.progress,
        desc=f"{name}: context check",
        context_clips=clips.roll(-1, 0),
    )
    return {
        "own": float(own.double().mean()),
        "other": float(other.double().mean()),
        "context_use": context_use(own, other),
    }


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"{PROG}: device={name!r}: {exc}") from None


def _benchmark(opts: SurpriseArgs, cfg: DictConfig) -> PhysicsBenchmark:
    """The benchmark file, or one generated in the run's data distribution (its canvas, and
    digit sizes, speeds and wall width when it trained on moving digits)."""
    canvas = int(cfg.encoder.img_size)
    if opts.benchmark:
        bench = PhysicsBenchmark.load(opts.benchmark)
        _say(f"benchmark {opts.benchmark}: {len(bench)} pairs of {bench.clip_frames} frames")
        if bench.canvas_size != canvas or cfg.encoder.in_chans != 1:
            raise UsageError(
                f"{PROG}: benchmark={opts.benchmark} holds 1-channel {bench.canvas_size}px "
                f"clips; the run's encoder takes {cfg.encoder.in_chans}-channel {canvas}px ones"
            )
        return bench
    params = dict(cfg.data.params) if cfg.data.name == "moving_digits" else {}
    shape: dict[str, Any] = {k: tuple(params[k]) for k in ("digit_size", "speed") if k in params}
    if "wall_width" in params:
        shape["wall_width"] = int(params["wall_width"])
    _say(f"generating {opts.pairs} pairs x {len(opts.events)} events ({', '.join(opts.events)})")
    try:
        return make_physics_benchmark(
            opts.pairs,
            opts.events,
            opts.clip_frames,
            canvas,
            split=opts.split,
            seed=opts.seed,
            balanced=opts.balanced,
            **shape,
        )
    except ValueError as exc:
        raise UsageError(f"{PROG}: {exc}") from None


def _score(
    method: IJEPA, bench: PhysicsBenchmark, windows: Windows, opts: SurpriseArgs, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    out = []
    for side in ("possible", "impossible"):
        out.append(
            surprise_curves(
                method,
                bench.clips(side),
                windows,
                opts.mask_id,
                opts.batch_size,
                opts.progress,
                desc=f"{name}: {side} clips",
            )
        )
    _say(f"{name}: {2 * len(bench)} clips scored in {time.perf_counter() - start:.1f} s")
    return out[0], out[1]


def _run_dir(file: Path) -> Path:
    return file.parent.parent if file.parent.name == "checkpoints" else file.parent


def _report(opts, run, bench, windows, curves, metrics) -> dict[str, Any]:
    return {
        "args": asdict(opts),
        "checkpoint": str(run.file),
        "step": run.step,
        "benchmark": bench.config,
        "windows": {
            "starts": list(windows.starts),
            "num_frames": windows.num_frames,
            "context_frames": windows.context_frames,
            "first_predicted": windows.first_predicted,
        },
        "headline_score": opts.score,
        "scores": list(SCORES),
        "metrics": metrics,
        "events": bench.events.tolist(),
        "event_frames": bench.event_frames.tolist(),
        "reverse": bench.reverse.tolist(),
        "curves": {
            name: {"possible": pos.tolist(), "impossible": imp.tolist()}
            for name, (pos, imp) in curves.items()
        },
    }


def _plot(path: Path, bench, windows, curves, pair: int) -> Path:
    rows, titles, violations = [], [], np.asarray(bench.violations())
    for violation in dict.fromkeys(violations.tolist()):
        members = np.flatnonzero(violations == violation)
        rows.append(int(members[min(pair, len(members) - 1)]))
        titles.append(f"{bench.events[rows[-1]]}: {violation} (pair {rows[-1]})")
    return plot_surprise_pairs(
        path,
        bench.possible[rows],
        bench.impossible[rows],
        bench.event_frames[rows].tolist(),
        titles,
        {name: (pos[rows].numpy(), imp[rows].numpy()) for name, (pos, imp) in curves.items()},
        windows.first_predicted,
    )


def _say(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)
