"""The receding-horizon (MPC) loop and its evaluation, independent of any neural network.

At every replanning step the planner optimises a whole action sequence from the current
observation to the goal observation; only the first ``execute`` actions are executed, then
it plans again from where the agent actually is, warm-started with the rest of the previous
plan -- the protocol of V-JEPA 2-AC (Assran et al. 2025, Sec. 4), DINO-WM (Zhou et al. 2024)
and PLDM (Sobal et al. 2025).

Action ``a`` of a plan is the net displacement over ``action_repeat`` environment steps (the
dataset's ``frame_skip`` with ``sum`` reduction); it is executed as ``a / action_repeat``
for ``action_repeat`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from jepalab.envs.protocol import PlanningEnv, check_info
from jepalab.planning.base import PlanResult
from jepalab.progress import progress_bar

WarmStart = Literal["last", "zeros", "none"]


class Planner(Protocol):
    """Plans from images: ``(observation, goal_observation, warm_start) -> PlanResult``.

    ``observation`` and ``goal_observation`` are ``(H, W)`` uint8 frames; ``warm_start`` is
    ``(H, A)`` or ``None``. A planner may also define ``reset(seed)`` (called at the start of
    every seeded episode, for reproducibility) and a true class attribute ``privileged``, in
    which case it is also given the environment's ``info`` dict (true position and goal) as
    the keyword ``info`` -- for oracles and baselines only.
    """

    def __call__(
        self, observation: np.ndarray, goal_observation: np.ndarray, warm_start: Tensor | None
    ) -> PlanResult: ...


@dataclass
class EpisodeResult:
    """One episode of the MPC loop.

    Attributes:
        success: the environment reported success (``terminated``) at some step.
        final_distance: the environment's distance to the goal at the end (Two-Rooms: pixels).
        steps: environment steps taken.
        states: ``(steps + 1, S)`` true states (Two-Rooms: positions), the start included.
        plans: ``(state, planned actions (H, A))`` at every replanning step.
        plan_seconds: wall-clock time of every planner call.
        start, goal: the task's states.
        action_repeat: environment steps per planned action (to redraw the plans).
    """

    success: bool
    final_distance: float
    steps: int
    states: np.ndarray
    plans: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)
    plan_seconds: list[float] = field(repr=False)
    start: np.ndarray
    goal: np.ndarray
    action_repeat: int = 1

    @property
    def positions(self) -> np.ndarray:
        """Two-Rooms' name for :attr:`states`."""
        return self.states


def shift_warm_start(actions: Tensor, executed: int, fill: WarmStart = "last") -> Tensor | None:
    """The next plan's initial mean ``(H, A)``: the unexecuted tail of ``actions``, moved to
    the front and padded with copies of the last action (``"last"``) or zeros; ``None`` for
    ``"none"`` (plan from scratch)."""
    if fill == "none":
        return None
    if fill not in ("last", "zeros"):
        raise ValueError(f"warm_start must be 'last', 'zeros' or 'none', got {fill!r}")
    tail = actions[executed:]
    pad = actions[-1:] if fill == "last" else torch.zeros_like(actions[-1:])
    return torch.cat([tail, pad.expand(len(actions) - len(tail), -1)])


def _call_planner(
    planner: Planner, obs: np.ndarray, goal_obs: np.ndarray, warm: Tensor | None, info: dict
) -> tuple[PlanResult, np.ndarray, float]:
    """Run and time one planning call; the ``.cpu()`` inside the timing waits for a GPU."""
    t0 = time.perf_counter()
    if getattr(planner, "privileged", False):
        plan = planner(obs, goal_obs, warm, info=info)
    else:
        plan = planner(obs, goal_obs, warm)
    actions = plan.actions.detach().cpu().numpy()
    return plan, actions, time.perf_counter() - t0


def _env_actions(actions: np.ndarray, action_repeat: int) -> Iterator[np.ndarray]:
    """Each planned action as ``action_repeat`` environment actions ``a / action_repeat``."""
    yield from np.repeat(actions / action_repeat, action_repeat, axis=0)


def run_episode(
    env: PlanningEnv,
    planner: Planner,
    *,
    execute: int = 1,
    action_repeat: int = 1,
    max_steps: int | None = None,
    seed: int | None = None,
    start: np.ndarray | None = None,
    goal: np.ndarray | None = None,
    warm_start: WarmStart = "last",
) -> EpisodeResult:
    """Plan, execute the first ``execute`` actions, replan, until success or out of steps.

    Args:
        env: a :class:`~jepalab.envs.protocol.PlanningEnv`; reset here with ``seed`` (and
            ``start``/``goal`` states as ``options`` if given).
        planner: see :class:`Planner`; reseeded with ``seed`` if it has ``reset``. If it has
            an ``action_repeat`` attribute, it must equal ``action_repeat``.
        execute: planned actions executed before replanning (1 = full MPC).
        action_repeat: environment steps per planned action.
        max_steps: budget of environment steps; default ``env.max_steps``.
        seed: episode seed (task and planner noise).
        start, goal: a fixed task instead of a sampled one.
        warm_start: how the next plan is initialised, see :func:`shift_warm_start`.

    Returns:
        The :class:`EpisodeResult`; success is checked after every environment step.
    """
    if execute < 1:
        raise ValueError(f"execute must be >= 1, got {execute}")
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    budget = env.max_steps if max_steps is None else max_steps
    if budget < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    planned_repeat = getattr(planner, "action_repeat", action_repeat)
    if planned_repeat != action_repeat:
        raise ValueError(
            f"action_repeat={action_repeat} but the planner plans with action_repeat="
            f"{planned_repeat}: its actions would be executed at the wrong scale"
        )
    if seed is not None and hasattr(planner, "reset"):
        planner.reset(seed)
    options = {k: v for k, v in (("start", start), ("goal", goal)) if v is not None}
    obs, info = env.reset(seed=seed, options=options or None)
    check_info(info, f"{type(env).__name__}.reset")
    goal_obs = env.render_goal()
    states, plans, plan_seconds = [np.asarray(info["state"])], [], []
    success = bool(info["success"])
    warm = None
    while not success and len(states) <= budget:
        plan, actions, seconds = _call_planner(planner, obs, goal_obs, warm, info)
        plans.append((np.asarray(info["state"]), actions))
        plan_seconds.append(seconds)
        executed = min(execute, len(actions))
        for a in _env_actions(actions[:executed], action_repeat):
            obs, _, terminated, _, info = env.step(a)
            states.append(np.asarray(info["state"]))
            success = bool(terminated or info["success"])
            if success or len(states) > budget:
                break
        warm = shift_warm_start(plan.actions, executed, warm_start)
    return EpisodeResult(
        success=success,
        final_distance=float(info["distance"]),
        steps=len(states) - 1,
        states=np.stack(states),
        plans=plans,
        plan_seconds=plan_seconds,
        start=states[0],
        goal=np.asarray(info["goal_state"]),
        action_repeat=action_repeat,
    )


def evaluate(
    env: PlanningEnv | Callable[[], PlanningEnv],
    planner: Planner,
    episodes: int,
    seed: int = 0,
    progress: str | None = None,
    **loop_kwargs,
) -> dict:
    """Success rate and cost of ``planner`` over ``episodes`` seeded episodes.

    Episode ``i`` uses seed ``seed + i`` (task and planner noise), so two calls with the
    same seed give the same numbers (up to timing).

    Args:
        env: an environment, or a factory making one.
        planner: see :class:`Planner`.
        episodes: how many episodes.
        seed: seed of the first episode.
        progress: a label for a progress bar over the episodes (running success rate; plain
            lines when stderr is not a terminal, :mod:`jepalab.progress`); ``None``: none.
        **loop_kwargs: passed to :func:`run_episode` (``execute``, ``action_repeat``, ...).

    Returns:
        ``success_rate``, ``mean_final_distance``, ``mean_steps``, ``plan_seconds_per_replan``
        (mean over planner calls), ``plan_seconds_per_env_step`` (planning time over
        environment steps) and ``episodes``, the list of :class:`EpisodeResult`.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if isinstance(env, type) or not isinstance(env, PlanningEnv):  # a class or a factory
        env = env()
    results: list[EpisodeResult] = []
    bar = progress_bar(total=episodes, desc=progress, enabled=progress is not None, unit="episode")
    with bar:
        for i in range(episodes):
            results.append(run_episode(env, planner, seed=seed + i, **loop_kwargs))
            bar.update()
            bar.set_postfix(success=f"{np.mean([r.success for r in results]):.0%}")
    seconds = [s for r in results for s in r.plan_seconds]
    total_steps = sum(r.steps for r in results)
    return {
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_final_distance": float(np.mean([r.final_distance for r in results])),
        "mean_steps": float(np.mean([r.steps for r in results])),
        "plan_seconds_per_replan": float(np.mean(seconds)) if seconds else 0.0,
        "plan_seconds_per_env_step": sum(seconds) / max(total_steps, 1),
        "episodes": results,
    }
