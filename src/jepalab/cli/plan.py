"""``jepalab plan``: evaluate a trained action-conditioned model by planning in the
embedded Two-Rooms environment.

``jepalab plan ckpt=RUN [key=value ...]``, the argument style of ``jepalab train`` and
``jepalab eval``. Each of ``episodes`` seeded episodes starts in one room with the goal in the
other; the planner (CEM or MPPI over the latent energy of :mod:`jepalab.planning.world_model`)
sees only the current and the goal image, executes the first ``execute`` planned actions and
replans
(MPC). Prints success rate, mean final distance to the goal and planning time per MPC step,
optionally next to a random and a greedy ("walk straight at the goal") baseline; saves a
picture of one episode with its planned and executed paths, and ``plan.json``.

The output files are checked to be writable before anything is computed, and ``plan.json``
is rewritten after each policy (``"complete": false`` until the last one), so an interrupted
evaluation keeps what it finished. Given a run directory, the newest checkpoint that loads is
used (a damaged newer one is skipped with a warning naming it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from jepalab.checkpoint import resolve_checkpoint
from jepalab.cli.args import check_output, parse_overrides
from jepalab.data.trajectories import read_meta
from jepalab.device import resolve_device
from jepalab.envs import TwoRooms, TwoRoomsConfig, TwoRoomsEnv
from jepalab.errors import ConfigError
from jepalab.planning import (
    PLANNERS,
    EnergyPlanner,
    GreedyPolicy,
    RandomPolicy,
    evaluate,
    save_episode_picture,
    save_landscape_picture,
)
from jepalab.planning.world_model import (
    ENERGIES,
    LatentWorldModel,
    latent_distance_map,
    latent_distance_profile,
)
from jepalab.runs import load_action_model

log = logging.getLogger(__name__)


def environment_config(run_config: dict) -> TwoRoomsConfig:
    """The Two-Rooms geometry the training data was collected in (its ``meta.json``), or the
    default one when the data directory is not at hand."""
    root = run_config.get("data", {}).get("params", {}).get("root")
    if root and (Path(root) / "meta.json").is_file():
        source = read_meta(root).get("source") or {}
        if source.get("env") == "two_rooms" and "config" in source:
            return TwoRoomsConfig(**source["config"])
    log.warning("no Two-Rooms dataset at data.params.root=%s; default geometry", root)
    return TwoRoomsConfig()


@dataclass
class PlanSettings:
    """Planning-evaluation options (defaults: DINO-WM's CEM, full MPC)."""

    ckpt: str = MISSING  # an action-conditioned run directory or checkpoint file
    # two_rooms (ours) | a Gymnasium id, e.g. swm/TwoRoom-v1: stable-worldmodel's protocol
    env: str = "two_rooms"
    data: str | None = None  # swm: the dataset of start/goal rows (default: the run's data)
    receding: int = 5  # swm: planned model steps executed per solve (receding_horizon)
    episodes: int = 50
    seed: int = 1000  # episode i uses seed + i; far from the data-collection seed
    planner: str = "cem"  # cem | mppi
    samples: int = 300
    elites: int = 30
    iterations: int | None = None  # None: 10 in two_rooms, 30 (their protocol) in swm envs
    horizon: int = 5
    momentum: float = 0.0
    init_std: float | None = None  # None: the action bound / 2
    temperature: float = 0.5
    energy: str = "min"  # final (V-JEPA 2) | sum | min (closest approach; see world_model.py)
    execute: int = 1
    action_repeat: int | None = None  # None: the training data's frame_skip
    hold: int = 1  # model steps per planned action
    max_steps: int | None = None  # None: the environment's (200)
    baselines: bool = False
    profile_pairs: int = 300  # position pairs of the latent-vs-true distance check; 0: skip
    picture: str | None = None  # None: <run dir>/plan_episode.png
    landscape: str | None = None  # None: <run dir>/plan_landscape.png
    out: str | None = None  # None: <run dir>/plan.json
    device: str = "auto"
    threads: int | None = None
    progress: bool = True  # a progress bar over the episodes of each policy


def build_planner(
    settings: PlanSettings, world_model: LatentWorldModel, bound: float, action_dim: int = 2
):
    """CEM or MPPI over the model's energy, in a box of +-``bound`` per action dimension."""
    init_std = settings.init_std if settings.init_std is not None else bound / 2
    config = PLANNERS.get(settings.planner)(
        samples=settings.samples,
        iterations=settings.iterations,
        horizon=settings.horizon,
        init_std=init_std,
        action_low=-bound,
        action_high=bound,
        elites=settings.elites,
        momentum=settings.momentum,
        temperature=settings.temperature,
    )
    device = None if world_model.device.type == "cpu" else str(world_model.device)
    return EnergyPlanner(world_model.make_energy, config, action_dim, settings.seed, device)


def run(settings: PlanSettings) -> dict[str, Any]:
    """Evaluate the planner (and baselines) over seeded episodes; returns the summary.

    Checks that the output files can be written before any compute; rewrites ``plan.json``
    after each policy."""
    resolve_checkpoint(settings.ckpt)  # a wrong path fails before outputs are made
    if settings.iterations is None:
        settings.iterations = 10 if settings.env == "two_rooms" else 30
    if settings.env != "two_rooms":
        from jepalab.cli.plan_swm import run_protocol_evaluation

        return run_protocol_evaluation(settings)
    run_dir = checkpoint_run_dir(settings.ckpt)
    picture = check_output(settings.picture or run_dir / "plan_episode.png", "picture=FILE")
    landscape = check_output(settings.landscape or run_dir / "plan_landscape.png", "landscape=FILE")
    out = check_output(settings.out or run_dir / "plan.json", "out=FILE")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    method, run_config = load_action_model(settings.ckpt, str(device))
    params = run_config.get("data", {}).get("params", {})
    model_repeat = settings.action_repeat or int(params.get("frame_skip", 1))
    action_repeat = model_repeat * settings.hold  # env steps per planned action
    if params.get("action_reduce", "sum") != "sum":
        raise ValueError("planning needs a model trained with data.params.action_reduce=sum")
    env_cfg = environment_config(run_config)
    world = TwoRooms(env_cfg)  # the geometry, for the pictures and the distance checks
    world_model = LatentWorldModel(
        method,
        params.get("mean", 0.0),
        params.get("std", 1.0),
        settings.energy,
        device,
        settings.hold,
    )
    profile = None
    if settings.profile_pairs > 0:
        profile = latent_distance_profile(world_model, world, settings.profile_pairs, settings.seed)
        log.info("latent vs true distance: Spearman %.3f", profile["spearman"])
    bound = env_cfg.max_speed * action_repeat
    loop = dict(execute=settings.execute, action_repeat=action_repeat, max_steps=settings.max_steps)
    policies: dict[str, Any] = {
        f"{settings.planner.upper()} on the world model": build_planner(
            settings, world_model, bound
        )
    }
    if settings.baselines:
        policies["random policy"] = RandomPolicy(bound)
        policies["greedy (privileged positions)"] = GreedyPolicy()
    rows, episodes = {}, {}
    summary = {
        "settings": asdict(settings)
        | {"action_repeat": model_repeat, "env_steps_per_planned_action": action_repeat},
        "environment": asdict(env_cfg),
        "results": rows,
        "latent_distance": profile,
        "picture": str(picture),
        "landscape": str(landscape),
        "complete": False,
    }
    for name, policy in policies.items():
        start = time.perf_counter()
        label = name if settings.progress else None
        result = evaluate(
            TwoRoomsEnv(env_cfg), policy, settings.episodes, settings.seed, label, **loop
        )
        episodes[name] = result.pop("episodes")
        result["per_episode"] = [
            {
                "seed": settings.seed + i,
                "success": bool(e.success),
                "final_distance": float(e.final_distance),
                "steps": int(e.steps),
                "start": [float(v) for v in e.start],
                "goal": [float(v) for v in e.goal],
            }
            for i, e in enumerate(episodes[name])
        ]
        result["wall_seconds"] = time.perf_counter() - start
        rows[name] = result
        log.info("%s: success %.1f%%", name, 100 * result["success_rate"])
        out.write_text(json.dumps(summary, indent=2))  # the policies finished so far
    first = next(iter(episodes.values()))[0]
    save_episode_picture(picture, world, first)
    distances = latent_distance_map(world_model, world, first.goal)
    save_landscape_picture(landscape, world, distances, first.goal, first)
    summary["complete"] = True
    out.write_text(json.dumps(summary, indent=2))
    print(format_results(rows, settings), flush=True)
    if profile is not None:
        print(format_profile(profile), flush=True)
    print(
        f"picture of episode 0: {picture}\nlatent distance to its goal: {landscape}\n"
        f"summary: {out}",
        flush=True,
    )
    return summary


def checkpoint_run_dir(checkpoint: str) -> Path:
    path = Path(checkpoint)
    if path.is_file():
        path = path.parent
    return path.parent if path.name == "checkpoints" else path


def format_results(rows: dict[str, dict], settings: PlanSettings) -> str:
    """A plain-text table of the evaluation."""
    header = f"{'policy':<32} {'success':>8} {'final dist':>10} {'plan s/step':>12}"
    lines = [
        f"Two-Rooms planning, {settings.episodes} episodes (start and goal in different rooms):",
        header,
        "-" * len(header),
    ]
    for name, r in rows.items():
        lines.append(
            f"{name:<32} {100 * r['success_rate']:>7.1f}% {r['mean_final_distance']:>10.2f} "
            f"{r['plan_seconds_per_replan']:>12.3f}"
        )
    return "\n".join(lines)


def format_profile(profile: dict) -> str:
    """One line per distance bin: the energy's slope that the planner follows."""
    bins = ", ".join(f"{k} {v:.3f}" for k, v in profile["mean_by_distance"].items())
    return (
        f"latent distance vs true distance over {profile['pairs']} random position pairs: "
        f"Spearman {profile['spearman']:.3f}; mean latent L1 by true distance: {bins}"
    )


# what ``jepalab plan --help`` says of each key (the defaults come from PlanSettings)
OPTION_HELP = {
    "env": "two_rooms (ours) or a Gymnasium id such as swm/TwoRoom-v1, swm/PushT-v1: "
    "stable-worldmodel's dataset-mode protocol (docs/planning.md)",
    "data": "swm: the trajectory dataset its start and goal rows come from (default: the "
    "run's data.params.root)",
    "receding": "swm: planned model steps executed per solve (their receding_horizon)",
    "episodes": "seeded episodes per policy (start and goal in different rooms)",
    "seed": "episode i uses seed + i (task and planner noise)",
    "planner": "optimiser over action sequences: cem | mppi",
    "samples": "candidate action sequences per iteration",
    "elites": "CEM: best candidates the sampling distribution is refitted to",
    "iterations": "optimiser iterations per replanning step (default 10; swm envs: 30)",
    "horizon": "planned actions per sequence",
    "momentum": "CEM: weight of the previous mean/std in each refit",
    "init_std": "initial sampling std per action dimension (default: half the action bound)",
    "temperature": "MPPI: softmax temperature over the candidates' energies",
    "energy": "how the per-step latent distances to the goal become one score: final | sum | min",
    "execute": "planned actions executed before replanning (1: full MPC)",
    "action_repeat": "env steps per model step (default: the data's frame_skip)",
    "hold": "model steps per planned action: the horizon looks hold times further ahead "
    "with the same number of decision variables; each planned action is executed for "
    "hold * action_repeat env steps before replanning",
    "max_steps": "env-step budget per episode (default: the environment's)",
    "profile_pairs": "position pairs of the latent-vs-true distance check (0: skip)",
    "picture": "PNG of episode 0 (default: <run dir>/plan_episode.png)",
    "landscape": "PNG of the latent distance to episode 0's goal from every position, with "
    "its executed path (default: <run dir>/plan_landscape.png)",
    "out": "JSON summary (default: <run dir>/plan.json)",
    "device": "auto | cpu | cuda[:i]",
    "threads": "torch CPU threads (default: torch's)",
    "baselines": "also evaluate a random and a greedy policy",
    "progress": "a progress bar over the episodes of each policy",
}


PROG = "jepalab plan"


def usage() -> str:
    """``jepalab plan --help``: every key, its default and what it does."""
    defaults = {f.name: f.default for f in fields(PlanSettings)}
    lines = [
        f"usage: {PROG} ckpt=RUN_DIR_OR_CHECKPOINT [key=value ...]",
        "",
        "Plans with a trained action-conditioned model in the embedded Two-Rooms world (MPC):",
        "success rate, final distance to the goal and planning time per step, optionally next",
        "to a random and a greedy baseline; writes plan.json and two pictures by the run.",
        "",
        "keys (defaults):",
        "  ckpt=???  an action-conditioned run directory (its newest readable checkpoint) or file",
    ]
    for name, text in OPTION_HELP.items():
        lines.append(f"  {name}={defaults[name]}  {text}")
    return "\n".join(lines)


def check_settings(settings: PlanSettings) -> None:
    """Names and counts, each error naming its key (before anything is loaded)."""
    choices = {"planner": list(PLANNERS), "energy": ENERGIES}
    for key, allowed in choices.items():
        if getattr(settings, key) not in allowed:
            raise ConfigError(f"{key}={getattr(settings, key)!r}: must be one of {list(allowed)}")
    keys = ("episodes", "samples", "elites", "iterations", "horizon", "execute", "hold", "receding")
    for key in keys:
        if getattr(settings, key) is not None and getattr(settings, key) < 1:
            raise ConfigError(f"{key}={getattr(settings, key)}: must be >= 1")


def parse_args(argv: Sequence[str]) -> PlanSettings:
    """``key=value`` arguments (``ckpt=`` required) into :class:`PlanSettings`."""
    settings = parse_overrides(list(argv), PlanSettings, PROG, positional="ckpt")
    check_settings(settings)
    return settings


def main(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage())
        return 0
    run(parse_args(argv))
    return 0


__all__ = [
    "PlanSettings",
    "build_planner",
    "check_settings",
    "checkpoint_run_dir",
    "main",
    "parse_args",
    "run",
]
