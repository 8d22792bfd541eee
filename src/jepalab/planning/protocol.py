"""stable-worldmodel's dataset-mode evaluation protocol, re-implemented on our trajectory
format and planning environments (:class:`~jepalab.envs.protocol.PlanningEnv`).

The protocol of its planning benchmark (``scripts/plan/eval_wm.py`` of the
stable-worldmodel repository with ``scripts/plan/config/{tworoom,pusht}.yaml``; the
environment side is ``stable_worldmodel.world.World._evaluate_from_dataset``):

1. A start row may be any dataset row whose ``step_idx <= episode_len - goal_offset - 1``
   (rows in episode order, then step order).
2. ``numpy.random.default_rng(42).choice(len(valid) - 1, 50, replace=False)`` picks 50 of
   them (the last valid row can never be picked: their ``- 1``), sorted.
3. Each evaluation episode puts the environment in the start row's state and aims it at the
   state of the same episode ``goal_offset = 25`` steps later (its goal frame is that
   state's frame).
4. The policy acts for ``eval_budget = 50`` environment steps; the episode succeeds if the
   environment reported ``terminated`` at any step (TwoRoom: within 16 px of the target;
   Push-T: positions within 20 and angle within π/9).

Their script hard-codes CUDA and, on Lance datasets, looks up an episode column the reader
hides (stable-worldmodel 0.1.1), hence this re-implementation; :func:`protocol_tasks` follows
their selection step for step and is tested against it.

Baselines on the same tasks: :class:`ZeroActions`, :class:`RandomActions` and
:class:`ReplayActions` (the dataset's own actions from the start row: ~100% when the start
and goal are restored correctly).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jepalab.data.trajectories import Episode, read_episode, read_meta
from jepalab.envs.protocol import PlanningEnv, check_info
from jepalab.errors import DataError

GOAL_OFFSET = 25  # steps between a start row and its goal (their goal_offset_steps)
EVAL_BUDGET = 50  # environment steps per episode (their eval_budget)
NUM_EVAL = 50  # evaluation episodes (their num_eval)
SEED = 42  # their seed of the start-row draw


@dataclass(frozen=True)
class ProtocolTask:
    """One evaluation episode: dataset episode, start step and goal step."""

    episode: int
    start: int
    goal: int


def protocol_tasks(
    episode_lengths: Sequence[int],
    num_eval: int = NUM_EVAL,
    goal_offset: int = GOAL_OFFSET,
    seed: int = SEED,
    where: str = "the dataset",
) -> list[ProtocolTask]:
    """The start rows of the protocol (module docstring, steps 1-2), in row order."""
    lengths = np.asarray(episode_lengths, dtype=np.int64)
    episode_idx = np.repeat(np.arange(len(lengths)), lengths)
    step_idx = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else lengths
    max_start = lengths - goal_offset - 1
    valid = np.nonzero(step_idx <= max_start[episode_idx])[0]
    if len(valid) - 1 < num_eval:
        longest = int(lengths.max()) if len(lengths) else 0
        raise DataError(
            f"{where} has {max(len(valid) - 1, 0)} drawable start rows for {num_eval} "
            f"episodes with the goal {goal_offset} steps ahead (an episode needs at least "
            f"{goal_offset + 1} frames; the longest has {longest}): collect more or longer "
            "episodes"
        )
    chosen = np.random.default_rng(seed).choice(len(valid) - 1, size=num_eval, replace=False)
    rows = np.sort(valid[chosen])
    return [
        ProtocolTask(int(episode_idx[r]), int(step_idx[r]), int(step_idx[r]) + goal_offset)
        for r in rows
    ]


def dataset_tasks(root: str | os.PathLike[str], **kwargs: Any) -> list[ProtocolTask]:
    """:func:`protocol_tasks` over the episodes of the trajectory dataset at ``root``."""
    meta = read_meta(root)
    lengths = meta.get("episode_lengths")
    if lengths is None:
        lengths = [len(read_episode(root, i).actions) + 1 for i in range(meta["num_episodes"])]
    return protocol_tasks(lengths, where=str(root), **kwargs)


class ProtocolPolicy(Protocol):
    """Acts in an evaluation episode: ``(frame, goal_frame, info) -> (k, A)`` actions, all
    executed before it is asked again (``k = 1``: closed loop); each call is one timed solve.
    ``reset(task, seed)`` starts an episode."""

    def reset(self, task: ProtocolTask, seed: int) -> None: ...

    def __call__(self, frame: np.ndarray, goal_frame: np.ndarray, info: dict) -> np.ndarray: ...


class ZeroActions:
    """Do nothing: the success rate of starts that already satisfy the goal."""

    def __init__(self, action_dim: int = 2) -> None:
        self.action_dim = action_dim

    def reset(self, task: ProtocolTask, seed: int) -> None:
        pass

    def __call__(self, frame: np.ndarray, goal_frame: np.ndarray, info: dict) -> np.ndarray:
        return np.zeros((EVAL_BUDGET, self.action_dim), dtype=np.float32)


class RandomActions:
    """Uniform actions in ``[low, high]``, seeded per episode."""

    def __init__(self, low: float = -1.0, high: float = 1.0, action_dim: int = 2) -> None:
        self.low, self.high, self.action_dim = low, high, action_dim
        self.rng = np.random.default_rng(0)

    def reset(self, task: ProtocolTask, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, frame: np.ndarray, goal_frame: np.ndarray, info: dict) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, (1, self.action_dim)).astype(np.float32)


class ReplayActions:
    """The dataset's own actions from the start row to the goal row, open loop, then zeros:
    ~100% exactly when the protocol restores starts and goals as recorded."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.actions = np.zeros((0, 2), dtype=np.float32)

    def reset(self, task: ProtocolTask, seed: int) -> None:
        self.actions = _episode(self.root, task.episode).actions[task.start : task.goal]

    def __call__(self, frame: np.ndarray, goal_frame: np.ndarray, info: dict) -> np.ndarray:
        if len(self.actions) == 0:  # replayed: stand still for the rest of the budget
            return np.zeros((EVAL_BUDGET, self.actions.shape[-1]), dtype=np.float32)
        actions, self.actions = self.actions, self.actions[:0]
        return actions


class PlannerPolicy:
    """A planner of ours (:class:`~jepalab.planning.mpc.Planner`: frames in, a plan of ``H``
    model steps out) under the protocol: each solve's first ``receding`` model steps are
    executed, each a block of ``len(step) / action_dim`` environment actions (their
    ``receding_horizon`` and ``action_block``), and the next solve is warm-started with the
    rest of the plan."""

    def __init__(self, planner: Any, receding: int = 5, action_dim: int = 2) -> None:
        if receding < 1:
            raise ValueError(f"receding must be >= 1, got {receding}")
        self.planner, self.receding, self.action_dim = planner, receding, action_dim
        self.warm: Any = None

    def reset(self, task: ProtocolTask, seed: int) -> None:
        self.warm = None
        if hasattr(self.planner, "reset"):
            self.planner.reset(seed)

    def __call__(self, frame: np.ndarray, goal_frame: np.ndarray, info: dict) -> np.ndarray:
        from jepalab.planning.mpc import shift_warm_start

        plan = self.planner(frame, goal_frame, self.warm)
        executed = min(self.receding, len(plan.actions))
        self.warm = shift_warm_start(plan.actions, executed, "last")
        actions = plan.actions[:executed].detach().cpu().numpy()
        return actions.reshape(-1, self.action_dim)


@lru_cache(maxsize=256)
def _episode_cached(root: str, index: int) -> Episode:
    return read_episode(root, index)


def _episode(root: Path, index: int) -> Episode:
    return _episode_cached(str(root), index)


@dataclass
class ProtocolEpisode:
    """One evaluation episode's record (enough to replay it)."""

    task: ProtocolTask
    seed: int
    success: bool
    success_step: int | None
    steps: int
    final_distance: float
    solve_seconds: list[float] = field(default_factory=list)
    actions: list[list[float]] = field(default_factory=list)


@dataclass
class ProtocolResult:
    """Success rate with its 95% Wilson interval, mean final distance, seconds per solve."""

    success_rate: float
    interval: tuple[float, float]
    mean_final_distance: float
    seconds_per_solve: float
    episodes: list[ProtocolEpisode]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = list(self.interval)
        return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (sound at 0% and 100%, unlike the
    normal approximation)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def run_protocol(
    env: PlanningEnv,
    root: str | os.PathLike[str],
    policy: ProtocolPolicy,
    tasks: Sequence[ProtocolTask],
    budget: int = EVAL_BUDGET,
    seed: int = 0,
) -> ProtocolResult:
    """Evaluate ``policy`` on ``tasks`` of the dataset at ``root`` (module docstring, steps
    3-4). Episode ``i`` resets the environment and the policy with ``seed + i``."""
    root = Path(root)
    records = []
    for i, task in enumerate(tasks):
        episode = _episode(root, task.episode)
        if episode.states is None or episode.states.shape[-1] == 0:
            raise DataError(f"{root}: episode {task.episode} has no states to restore")
        options = {"start": episode.states[task.start], "goal": episode.states[task.goal]}
        frame, info = env.reset(seed=seed + i, options=options)
        check_info(info, f"{type(env).__name__}.reset")
        goal_frame = env.render_goal()
        policy.reset(task, seed + i)
        record = ProtocolEpisode(task, seed + i, bool(info["success"]), None, 0, 0.0)
        if record.success:
            record.success_step = 0
        while record.steps < budget and not record.success:
            t0 = time.perf_counter()
            actions = np.asarray(policy(frame, goal_frame, info), dtype=np.float32)
            record.solve_seconds.append(time.perf_counter() - t0)
            for action in actions.reshape(len(actions), -1):
                frame, _, terminated, _, info = env.step(action)
                record.steps += 1
                record.actions.append([float(a) for a in action])
                if terminated or info["success"]:
                    record.success, record.success_step = True, record.steps
                if record.success or record.steps >= budget:
                    break
        record.final_distance = float(info["distance"])
        records.append(record)
    successes = sum(r.success for r in records)
    solves = [s for r in records for s in r.solve_seconds]
    return ProtocolResult(
        success_rate=successes / max(len(records), 1),
        interval=wilson_interval(successes, len(records)),
        mean_final_distance=float(np.mean([r.final_distance for r in records])),
        seconds_per_solve=float(np.mean(solves)) if solves else 0.0,
        episodes=records,
    )


__all__ = [
    "EVAL_BUDGET",
    "GOAL_OFFSET",
    "NUM_EVAL",
    "SEED",
    "PlannerPolicy",
    "ProtocolEpisode",
    "ProtocolPolicy",
    "ProtocolResult",
    "ProtocolTask",
    "RandomActions",
    "ReplayActions",
    "ZeroActions",
    "dataset_tasks",
    "protocol_tasks",
    "run_protocol",
    "wilson_interval",
]
