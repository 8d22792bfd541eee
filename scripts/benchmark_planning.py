"""Time one MPC planning step of the Two-Rooms world model; prints JSON.

The issue's reference point: CEM with 300 samples x horizon 5 x 10 iterations. Every
iteration scores all candidates in one batched, KV-cached predictor rollout. The model has
the shapes of ``--experiment`` (default ``two_rooms_wm``, the planning recipe: one latent per
frame; ``two_rooms_ac``: 16 patch tokens per frame); weights do not change the cost; pass
``--checkpoint`` to time a trained run instead.

    python scripts/benchmark_planning.py [--experiment two_rooms_ac] [--samples 300] [--horizon 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from jepalab.config import config_dir, register_configs
from jepalab.envs import TwoRooms
from jepalab.methods.build import build_action_model
from jepalab.planning import CEMConfig, cem
from jepalab.planning.world_model import LatentWorldModel
from jepalab.runs import load_action_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--experiment", default="two_rooms_wm")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        method, _ = load_action_model(args.checkpoint, args.device)
    else:
        register_configs()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={args.experiment}"])
        torch.manual_seed(0)
        method = build_action_model(cfg, action_dim=2, state_dim=0, load_encoder=False)
    model = LatentWorldModel(method, 0.046, 0.145, "min", args.device)
    world = TwoRooms()
    obs, goal = world.render(np.array([20.0, 40.0])), world.render(np.array([45.0, 40.0]))
    bound = 5 * world.config.max_speed
    config = CEMConfig(
        samples=args.samples,
        elites=args.elites,
        iterations=args.iterations,
        horizon=args.horizon,
        init_std=bound / 2,
        action_low=-bound,
        action_high=bound,
    )
    calls = []
    times = []
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        energy_fn = model.make_energy(obs, goal)

        def counted(actions, fn=energy_fn):
            calls.append(tuple(actions.shape))
            return fn(actions)

        cem(counted, config, 2, generator=torch.Generator().manual_seed(repeat))
        if repeat:
            times.append(time.perf_counter() - start)
    predictor = method.predictor
    print(
        json.dumps(
            {
                "benchmark": "mpc_planning_step",
                "planner": "cem",
                "experiment": None if args.checkpoint else args.experiment,
                "checkpoint": args.checkpoint,
                "samples": args.samples,
                "horizon": args.horizon,
                "iterations": args.iterations,
                "energy_calls_per_step": len(calls) // (args.repeats + 1),
                "candidates_per_call": calls[0][0],
                "seconds_per_mpc_step_median": float(np.median(times)),
                "seconds_per_mpc_step_min": float(np.min(times)),
                "tokens_per_step": predictor.tokens_per_step,
                "predictor": {
                    "embed_dim": predictor.embed_dim,
                    "depth": len(predictor.predictor_blocks),
                },
                "threads": torch.get_num_threads(),
                "device": args.device,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
