"""stable-worldmodel's LeWM next to a jepalab world model, on the same collected data, the same
protocol and the same planner (docs/planning.md, "Side by side with LeWM").

LeWM is built from stable-worldmodel 0.1.1's own modules and config (their
``scripts/train/config/lewm.yaml``: ViT-tiny encoder from stable-pretraining, their
``Predictor``, ``Embedder``, ``MLP`` projectors, ``LeWM``) and trained with their loss
(``scripts/train/lewm.py``, ``lejepa_forward``: next-embedding MSE over a 3-frame history +
0.09 x their ``SIGReg``), their optimiser (AdamW 5e-5, wd 1e-3, clip 1.0) and batch 128, in
fp32 on the CPU, for a budget of CPU minutes. Planning calls their ``LeWM.get_cost`` inside
jepalab's CEM with the settings of ``jepalab plan env=...`` (300 samples, 30 elites, 30
iterations, horizon 5, receding 5, action block 5), on the tasks of
:mod:`jepalab.planning.protocol`. Needs their training extra in the environment::

    pip install 'stable-worldmodel[train]==0.1.1' imageio

    S=scripts/lewm_side_by_side.py; D=data/swm_TwoRoom-v1; E=swm/TwoRoom-v1
    python $S train data=$D out=runs/lewm_tworoom minutes=10
    python $S plan ckpt=runs/lewm_tworoom env=$E data=$D every=10
    python $S time ckpt=runs/lewm_tworoom ours=runs/swm_tworoom_wm env=$E data=$D
    python $S rank ckpt=runs/lewm_tworoom ours=runs/swm_tworoom_wm data=$D

``time`` measures seconds per solve of both models in one process, alternating solve by solve
on the same start and goal frames. ``rank`` asks whether a model's cost tells actions apart:
on the first ``solves`` tasks, where the dataset's own actions lead from the start frame to
the goal frame, it ranks those actions among themselves, zero actions and ``samples - 2``
uniform random ones by each model's cost (0: the lowest cost; ~``samples / 2``: no
preference). Each command prints JSON.

Deviations from their script, forced by the CPU: fp32 instead of bf16; a plain loop instead
of Lightning (same optimiser, clipping and loss); 64-px frames with 16-px patches (the same
image size and token grid as our recipes; theirs 224 px / 14); the LR schedule (1% linear
warm-up, then cosine) spans the steps that fit the budget, stepped per batch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, OmegaConf

from jepalab.cli.args import parse_overrides
from jepalab.data.trajectories import read_episode, read_meta
from jepalab.errors import ConfigError

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # their ToImage stats
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
FRAMESKIP = 5  # their data config: a model step is 5 environment steps (action block 5)
NUM_STEPS = 4  # their wm.history_size 3 + wm.num_preds 1
LEWM_CONFIG = {  # their scripts/train/config/lewm.yaml at 0.1.1 (model, loss, optimiser)
    "wm": {"history_size": 3, "num_preds": 1},
    "optimizer": {"lr": 5e-5, "weight_decay": 1e-3},
    "loss": {"sigreg": {"weight": 0.09, "kwargs": {"knots": 17, "num_proj": 1024}}},
    "model": {
        "_target_": "stable_worldmodel.wm.lewm.LeWM",
        "encoder": {
            "_target_": "stable_pretraining.backbone.utils.vit_hf",
            "size": "tiny",
            "patch_size": "${patch_size}",
            "image_size": "${img_size}",
            "pretrained": False,
            "use_mask_token": False,
        },
        "predictor": {
            "_target_": "stable_worldmodel.wm.lewm.module.Predictor",
            "num_frames": 3,
            "input_dim": 192,
            "hidden_dim": 192,
            "output_dim": 192,
            "depth": 6,
            "heads": 16,
            "mlp_dim": 2048,
            "dim_head": 64,
            "dropout": 0.1,
            "emb_dropout": 0.0,
        },
        "action_encoder": {
            "_target_": "stable_worldmodel.wm.lewm.module.Embedder",
            "input_dim": "${action_input}",
            "emb_dim": 192,
        },
        "projector": {
            "_target_": "stable_worldmodel.wm.lewm.module.MLP",
            "input_dim": 192,
            "output_dim": 192,
            "hidden_dim": 2048,
            "norm_fn": {"_target_": "torch.nn.BatchNorm1d", "_partial_": True},
        },
        "pred_proj": {
            "_target_": "stable_worldmodel.wm.lewm.module.MLP",
            "input_dim": 192,
            "output_dim": 192,
            "hidden_dim": 2048,
            "norm_fn": {"_target_": "torch.nn.BatchNorm1d", "_partial_": True},
        },
    },
}


@dataclass
class Args:
    data: str = MISSING  # a jepalab trajectory dataset (jepalab collect env=...)
    out: str | None = None  # train: the run directory
    ckpt: str | None = None  # plan / time: LeWM's run directory
    ours: str | None = None  # time: our run directory
    env: str | None = None  # plan / time: the Gymnasium id
    minutes: float = 10.0  # train: CPU minutes (process time) of training
    size: int = 64
    patch: int = 16
    batch: int = 128
    seed: int = 3072  # their config's seed
    threads: int = 1
    episodes: int = 50  # plan: the protocol's tasks ...
    every: int = 1  # ... of which every N-th is run
    solves: int = 10  # time: solves per model; rank: tasks
    samples: int = 301  # rank: candidates per task (the dataset's actions, zero, random)


def _their_modules() -> Any:
    try:
        import hydra.utils
        import stable_worldmodel  # noqa: F401
        from stable_worldmodel.wm.loss import SIGReg
    except ImportError as err:
        raise ConfigError(
            f"{err}: LeWM needs stable-worldmodel's training extra: pip install "
            "'stable-worldmodel[train]==0.1.1' imageio"
        ) from None
    return hydra.utils, SIGReg


def build_lewm(size: int, patch: int, action_dim: int) -> torch.nn.Module:
    instantiate, _ = _their_modules()
    cfg = OmegaConf.create(
        {**LEWM_CONFIG, "img_size": size, "patch_size": patch, "action_input": action_dim}
    )
    return instantiate.instantiate(cfg.model)


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> ImageNet-normalised ``(..., 3, H, W)`` (their transform)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 255.0
    return (x - IMAGENET_MEAN) / IMAGENET_STD


class Windows(torch.utils.data.Dataset):
    """Their training view of a dataset: 4 frames 5 steps apart, each with the 5 actions that
    follow it side by side (z-scored per column, their ``column_normalizer``; NaN past the
    episode's end, zeroed as their forward does)."""

    def __init__(self, root: str) -> None:
        meta = read_meta(root)
        self.episodes = [read_episode(root, i) for i in range(meta["num_episodes"])]
        span = (NUM_STEPS - 1) * FRAMESKIP
        self.index = [
            (e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep.frames) - span)
        ]
        actions = np.concatenate([ep.actions for ep in self.episodes])
        self.action_mean = actions.mean(0).astype(np.float32)
        self.action_std = actions.std(0).astype(np.float32) + 1e-6

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, t = self.index[i]
        ep = self.episodes[e]
        steps = [t + k * FRAMESKIP for k in range(NUM_STEPS)]
        actions = (ep.actions - self.action_mean) / self.action_std
        blocks = np.full((NUM_STEPS, FRAMESKIP * actions.shape[1]), np.nan, np.float32)
        for k, s in enumerate(steps):
            chunk = actions[s : s + FRAMESKIP]
            blocks[k, : chunk.size] = chunk.reshape(-1)
        return {"pixels": to_pixels(ep.frames[steps]), "action": torch.from_numpy(blocks)}


def train(args: Args) -> dict[str, Any]:
    _, SIGReg = _their_modules()
    torch.manual_seed(args.seed)
    data = Windows(args.data)
    action_dim = data.episodes[0].actions.shape[1]
    model = build_lewm(args.size, args.patch, FRAMESKIP * action_dim)
    sigreg = SIGReg(**LEWM_CONFIG["loss"]["sigreg"]["kwargs"])
    weight = LEWM_CONFIG["loss"]["sigreg"]["weight"]
    opt = torch.optim.AdamW(model.parameters(), **LEWM_CONFIG["optimizer"])
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    history, preds = LEWM_CONFIG["wm"]["history_size"], LEWM_CONFIG["wm"]["num_preds"]
    budget, cpu0, wall0 = args.minutes * 60, time.process_time(), time.perf_counter()
    step, total, log = 0, None, []
    model.train()
    while step == 0 or time.process_time() - cpu0 < budget:
        for batch in loader:
            batch["action"] = torch.nan_to_num(batch["action"], 0.0)
            out = model.encode(batch)
            emb, act = out["emb"], out["act_emb"]
            pred = model.predict(emb[:, :history], act[:, :history])
            pred_loss = (pred - emb[:, preds:]).pow(2).mean()
            sig = sigreg(emb.transpose(0, 1))
            loss = pred_loss + weight * sig
            if not torch.isfinite(loss):
                raise FloatingPointError(f"LeWM's loss is {loss.item()} at step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            used = time.process_time() - cpu0
            if step == 5:  # the steps that fit the budget, from the first five
                total = max(10, int(budget / (used / 5)))
            if total:
                warm = max(1, int(0.01 * total))
                progress = min(1.0, (step - warm) / max(1, total - warm))
                factor = step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * progress))
                for group in opt.param_groups:
                    group["lr"] = LEWM_CONFIG["optimizer"]["lr"] * factor
            if step % 10 == 0 or step == 1:
                row = {"step": step, "loss": loss.item(), "sigreg": sig.item(), "cpu_s": used}
                log.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            if used >= budget:
                break
    out_dir = Path(args.out or "runs/lewm")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "batch": args.batch,
        "cpu_seconds": time.process_time() - cpu0,
        "wall_seconds": time.perf_counter() - wall0,
        "windows": len(data),
        "data": args.data,
    }
    torch.save(
        {
            "model": model.state_dict(),
            "size": args.size,
            "patch": args.patch,
            "action_dim": int(action_dim),
            "action_mean": torch.from_numpy(data.action_mean),
            "action_std": torch.from_numpy(data.action_std),
            "summary": summary,
        },
        out_dir / "lewm.pt",
    )
    (out_dir / "train.json").write_text(json.dumps({**summary, "log": log}, indent=1))
    return summary


class LeWMEnergy:
    """``make_energy(frame, goal) -> energy(actions (S, H, 5 * A)) -> (S,)`` through
    ``LeWM.get_cost`` with their info layout (``(B, S, 1, 3, H, W)`` pixels and goal)."""

    def __init__(self, run: str) -> None:
        state = torch.load(Path(run) / "lewm.pt", weights_only=True)
        self.size = int(state["size"])
        self.model = build_lewm(self.size, int(state["patch"]), FRAMESKIP * state["action_dim"])
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.mean = state["action_mean"].repeat(FRAMESKIP)
        self.std = state["action_std"].repeat(FRAMESKIP)
        self.device = torch.device("cpu")
        self.summary = state["summary"]

    def make_energy(self, observation: np.ndarray, goal: np.ndarray):
        info = {
            "pixels": to_pixels(observation)[None, None, None],  # (1, 1, 1, 3, H, W)
            "goal": to_pixels(goal)[None, None, None],
        }

        @torch.no_grad()
        def energy(actions: torch.Tensor) -> torch.Tensor:
            n = actions.shape[0]
            candidates = ((actions.float() - self.mean) / self.std)[None]
            call = {k: v.expand(1, n, *v.shape[2:]) for k, v in info.items()}
            call["action"] = torch.zeros(1, n, 1, candidates.shape[-1])
            return self.model.get_cost(call, candidates)[0]

        return energy


def _planner(args: Args, world_model: Any, action_dim: int):
    from jepalab.cli.plan import build_planner
    from jepalab.cli.plan import parse_args as plan_settings

    settings = plan_settings(["ckpt=unused", f"env={args.env}", "iterations=30"])
    return settings, build_planner(settings, world_model, 1.0, FRAMESKIP * action_dim)


def plan(args: Args) -> dict[str, Any]:
    from jepalab.envs.gymnasium import GymnasiumEnv
    from jepalab.planning.protocol import (
        EVAL_BUDGET,
        GOAL_OFFSET,
        PlannerPolicy,
        dataset_tasks,
        run_protocol,
    )

    model = LeWMEnergy(args.ckpt)
    action_dim = int(read_meta(args.data)["action_dim"])
    settings, planner = _planner(args, model, action_dim)
    policy = PlannerPolicy(planner, settings.receding, action_dim)
    env = GymnasiumEnv(args.env, image_size=model.size, max_steps=EVAL_BUDGET)
    tasks = dataset_tasks(args.data, num_eval=args.episodes, goal_offset=GOAL_OFFSET)
    tasks = tasks[:: args.every]
    start = time.perf_counter()
    result = run_protocol(env, Path(args.data), policy, tasks, EVAL_BUDGET, settings.seed)
    env.close()
    record = result.to_json()
    record.update(
        wall_seconds=time.perf_counter() - start,
        tasks=[vars(t) for t in tasks],
        settings=dict(vars(settings)),
        train=model.summary,
    )
    Path(args.ckpt, "plan.json").write_text(json.dumps(record, indent=1))
    keys = ("success_rate", "interval", "mean_final_distance", "seconds_per_solve")
    return {k: record[k] for k in keys} | {"episodes": len(tasks)}


def our_world_model(run: str) -> Any:
    """Our run's planning energy, as ``jepalab plan`` builds it (the run's frame statistics,
    the minimum over the horizon)."""
    from jepalab.planning.world_model import LatentWorldModel
    from jepalab.runs import load_action_model

    method, run_config = load_action_model(run)
    params = run_config.get("data", {}).get("params", {})
    return LatentWorldModel(method, params.get("mean", 0.0), params.get("std", 1.0), "min")


def time_solves(args: Args) -> dict[str, Any]:
    """Seconds per solve of LeWM and of our run, alternating on the same frames."""
    from jepalab.planning.protocol import GOAL_OFFSET, dataset_tasks

    ours = our_world_model(args.ours)
    lewm = LeWMEnergy(args.ckpt)
    action_dim = int(read_meta(args.data)["action_dim"])
    planners = {
        name: _planner(args, m, action_dim)[1] for name, m in (("jepalab", ours), ("lewm", lewm))
    }
    tasks = dataset_tasks(args.data, goal_offset=GOAL_OFFSET)[:: max(1, 50 // args.solves)]
    seconds: dict[str, list[float]] = {name: [] for name in planners}
    for task in tasks[: args.solves]:
        frames = read_episode(args.data, task.episode).frames
        for name, planner in planners.items():
            start = time.perf_counter()
            planner(frames[task.start], frames[task.goal], None)
            seconds[name].append(time.perf_counter() - start)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    return {
        "seconds_per_solve": median,
        "lewm_over_jepalab": median["lewm"] / median["jepalab"],
        "solves": len(seconds["lewm"]),
        "threads": torch.get_num_threads(),
        "params": {
            "jepalab": sum(p.numel() for p in ours.method.parameters()),
            "lewm": sum(p.numel() for p in lewm.model.parameters()),
        },
    }


@torch.no_grad()
def rank_actions(args: Args) -> dict[str, Any]:
    """Rank of the dataset's own actions among ``samples`` candidates under each model's cost
    (module docstring), per task; the same random candidates for both models."""
    from jepalab.planning.protocol import GOAL_OFFSET, dataset_tasks

    models: dict[str, Any] = {"lewm": LeWMEnergy(args.ckpt)}
    if args.ours:
        models["jepalab"] = our_world_model(args.ours)
    if GOAL_OFFSET % FRAMESKIP:
        raise ConfigError(f"the goal offset {GOAL_OFFSET} is not whole action blocks")
    blocks = GOAL_OFFSET // FRAMESKIP
    ranks: dict[str, list[int]] = {name: [] for name in models}
    gen = torch.Generator().manual_seed(args.seed)
    for task in dataset_tasks(args.data, goal_offset=GOAL_OFFSET)[: args.solves]:
        episode = read_episode(args.data, task.episode)
        own = torch.from_numpy(episode.actions[task.start : task.goal]).float()
        own = own.reshape(1, blocks, FRAMESKIP * own.shape[1])
        random = torch.rand(args.samples - 2, *own.shape[1:], generator=gen) * 2 - 1
        candidates = torch.cat([own, torch.zeros_like(own), random])
        for name, model in models.items():
            cost = model.make_energy(episode.frames[task.start], episode.frames[task.goal])(
                candidates
            )
            ranks[name].append(int((cost < cost[0]).sum()))
    return {
        "ranks": ranks,
        "median_rank": {name: float(np.median(r)) for name, r in ranks.items()},
        "candidates": args.samples,
    }


COMMANDS = {"train": train, "plan": plan, "time": time_solves, "rank": rank_actions}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    args = parse_overrides(argv[1:], Args, f"lewm_side_by_side.py {argv[0]}")
    torch.set_num_threads(args.threads)
    print(json.dumps(COMMANDS[argv[0]](args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
