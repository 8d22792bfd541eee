"""``jepalab plan ckpt=RUN env=swm/TwoRoom-v1``: a trained world model under stable-worldmodel's
dataset-mode protocol (:mod:`jepalab.planning.protocol`), next to its baselines.

The start and goal rows come from a trajectory dataset collected in the same environment
(``data=``, default the run's training data); the planner (CEM or MPPI over the model's
latent energy) executes ``receding`` planned model steps per solve, each a block of
environment actions. Prints the success rate with its 95% interval, the mean final distance
and the seconds per solve per policy; ``plan.json`` records every episode (task, seed,
actions), so any one can be replayed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from jepalab.cli.args import check_output
from jepalab.cli.plan import PlanSettings, build_planner, checkpoint_run_dir
from jepalab.data.trajectories import read_meta
from jepalab.device import resolve_device
from jepalab.envs.gymnasium import GymnasiumEnv
from jepalab.errors import ConfigError
from jepalab.planning.protocol import (
    EVAL_BUDGET,
    GOAL_OFFSET,
    PlannerPolicy,
    RandomActions,
    ReplayActions,
    ZeroActions,
    dataset_tasks,
    run_protocol,
)
from jepalab.planning.world_model import LatentWorldModel
from jepalab.runs import load_action_model

log = logging.getLogger(__name__)


def protocol_dataset(settings: PlanSettings, run_config: dict) -> Path:
    """The dataset of start/goal rows, checked to come from ``settings.env``."""
    root = Path(settings.data or run_config.get("data", {}).get("params", {}).get("root", ""))
    if not (root / "meta.json").is_file():
        raise ConfigError(
            f"data={root}: no trajectory dataset there; collect one with jepalab collect "
            f"--env {settings.env} --out DIR and pass data=DIR"
        )
    source = (read_meta(root).get("source") or {}).get("env")
    if source != settings.env:
        raise ConfigError(f"data={root} was collected in {source!r}, not env={settings.env}")
    return root


def run_protocol_evaluation(settings: PlanSettings) -> dict[str, Any]:
    run_dir = checkpoint_run_dir(settings.ckpt)
    out = check_output(settings.out or run_dir / "plan.json", "out=FILE")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    method, run_config = load_action_model(settings.ckpt, str(device))
    root = protocol_dataset(settings, run_config)
    params = run_config.get("data", {}).get("params", {})
    world_model = LatentWorldModel(
        method, params.get("mean", 0.0), params.get("std", 1.0), settings.energy, device
    )
    size = int(run_config.get("encoder", {}).get("img_size", 64))
    budget = settings.max_steps or EVAL_BUDGET
    env = GymnasiumEnv(settings.env, image_size=size, max_steps=budget)
    tasks = dataset_tasks(root, num_eval=settings.episodes, goal_offset=GOAL_OFFSET)
    action_dim = int(read_meta(root)["action_dim"])
    model_dim = int(method.predictor.action_dim)
    if model_dim % action_dim:
        raise ConfigError(
            f"the model takes {model_dim}-D actions, not blocks of {settings.env}'s "
            f"{action_dim}-D ones"
        )
    planner = build_planner(settings, world_model, 1.0, model_dim)
    policies: dict[str, Any] = {
        f"{settings.planner.upper()} on the world model": PlannerPolicy(
            planner, settings.receding, action_dim
        )
    }
    if settings.baselines:
        policies["zero actions"] = ZeroActions(action_dim)
        policies["random actions"] = RandomActions(action_dim=action_dim)
        policies["replay of the dataset's actions"] = ReplayActions(root)
    rows: dict[str, Any] = {}
    summary = {
        "protocol": "stable-worldmodel dataset mode (jepalab.planning.protocol)",
        "env": settings.env,
        "data": str(root),
        "settings": dict(vars(settings)),
        "action_block": model_dim // action_dim,
        "goal_offset": GOAL_OFFSET,
        "budget": budget,
        "results": rows,
        "complete": False,
    }
    for name, policy in policies.items():
        start = time.perf_counter()
        result = run_protocol(env, root, policy, tasks, budget, settings.seed).to_json()
        result["wall_seconds"] = time.perf_counter() - start
        rows[name] = result
        log.info("%s: success %.1f%%", name, 100 * result["success_rate"])
        out.write_text(json.dumps(summary, indent=2))  # the policies finished so far
    env.close()
    summary["complete"] = True
    out.write_text(json.dumps(summary, indent=2))
    print(format_protocol(rows, settings, len(tasks)), flush=True)
    print(f"summary: {out}", flush=True)
    return summary


def format_protocol(rows: dict[str, dict], settings: PlanSettings, episodes: int) -> str:
    header = f"{'policy':<34} {'success (95% CI)':>22} {'final dist':>10} {'s/solve':>8}"
    lines = [
        f"{settings.env}, stable-worldmodel's protocol: {episodes} episodes, goal "
        f"{GOAL_OFFSET} steps ahead, budget {settings.max_steps or EVAL_BUDGET} steps",
        header,
        "-" * len(header),
    ]
    for name, r in rows.items():
        lo, hi = r["interval"]
        cell = f"{100 * r['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
        lines.append(
            f"{name:<34} {cell:>22} {r['mean_final_distance']:>10.2f} "
            f"{r['seconds_per_solve']:>8.3f}"
        )
    return "\n".join(lines)


__all__ = ["format_protocol", "protocol_dataset", "run_protocol_evaluation"]
