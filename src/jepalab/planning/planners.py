"""Planners for the receding-horizon loop of :mod:`jepalab.planning.mpc`.

* :class:`EnergyPlanner` -- any energy (e.g. a world model's latent distance to the goal,
  V-JEPA 2-AC, Assran et al. 2025, Sec. 4) minimised by CEM or MPPI. It sees only images.
* :class:`OraclePlanner` -- the same optimisers on :func:`oracle_energy`, which rolls out the
  *true* dynamics: the upper bound a perfect world model would reach.
* :class:`RandomPolicy` and :class:`GreedyPolicy` -- the floor, and the "walk straight at the
  goal" baseline that the wall defeats.

Planners whose class attribute ``privileged`` is true read the true position and goal from
the environment's ``info`` dict (keyword ``info``); they exist for reference and testing,
never as a result for a learned model.

Action units: every planner returns actions in environment pixels, each being the *net*
displacement over ``action_repeat`` environment steps (the dataset's ``frame_skip`` with
``sum`` reduction); the loop executes action ``a`` as ``a / action_repeat`` per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from jepalab.envs.two_rooms import TwoRooms
from jepalab.planning.base import EnergyFn, PlanResult
from jepalab.planning.cem import CEMConfig, cem
from jepalab.planning.mppi import MPPIConfig, mppi
from jepalab.registry import Registry

OptimizerConfig = CEMConfig | MPPIConfig
Energy = Literal["final", "sum", "min"]

# planner name -> ``(samples, iterations, horizon, init_std, action_low, action_high, **its
# own options) -> config``; a command passes every option and each optimiser takes its own
PLANNERS: Registry = Registry("planner", key="planner")


@PLANNERS.register("cem")
def cem_planner(
    samples: int,
    iterations: int,
    horizon: int,
    init_std: float,
    action_low: float,
    action_high: float,
    *,
    elites: int = 30,
    momentum: float = 0.0,
    **_: object,
) -> CEMConfig:
    """The cross-entropy method (:func:`~jepalab.planning.cem.cem`)."""
    return CEMConfig(
        samples=samples,
        elites=elites,
        iterations=iterations,
        horizon=horizon,
        momentum=momentum,
        init_std=init_std,
        action_low=action_low,
        action_high=action_high,
    )


@PLANNERS.register("mppi")
def mppi_planner(
    samples: int,
    iterations: int,
    horizon: int,
    init_std: float,
    action_low: float,
    action_high: float,
    *,
    temperature: float = 0.5,
    **_: object,
) -> MPPIConfig:
    """Model-predictive path integral (:func:`~jepalab.planning.mppi.mppi`); ``init_std`` is
    its starting noise."""
    return MPPIConfig(
        samples=samples,
        iterations=iterations,
        horizon=horizon,
        temperature=temperature,
        noise_std=init_std,
        action_low=action_low,
        action_high=action_high,
    )


def optimize(
    energy_fn: EnergyFn,
    config: OptimizerConfig,
    action_dim: int,
    init_mean: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PlanResult:
    """Run :func:`cem` or :func:`mppi`, whichever ``config`` is for."""
    if isinstance(config, CEMConfig):
        return cem(energy_fn, config, action_dim, init_mean, generator, device)
    if isinstance(config, MPPIConfig):
        return mppi(energy_fn, config, action_dim, init_mean, generator, device)
    raise ValueError(f"config must be a CEMConfig or an MPPIConfig, got {type(config).__name__}")


@dataclass
class EnergyPlanner:
    """Plans by minimising ``make_energy(observation, goal_observation)`` with CEM or MPPI.

    This is where a world model plugs in: ``make_energy`` encodes the two ``(H, W)`` uint8
    images once and returns an :data:`EnergyFn` that rolls the predictor out for all
    candidates and measures the distance to the goal embedding. The energy must take
    actions in environment pixels (see the module docstring); a model trained on
    normalised actions rescales them inside its energy.

    Args:
        make_energy: ``(observation, goal_observation) -> EnergyFn``.
        config: a :class:`CEMConfig` or :class:`MPPIConfig`.
        action_dim: ``A``.
        seed: seeds the sampling noise; :meth:`reset` reseeds it per episode.
        device: where candidates are sampled.
    """

    make_energy: Callable[[np.ndarray, np.ndarray], EnergyFn]
    config: OptimizerConfig
    action_dim: int = 2
    seed: int = 0
    device: str | None = None
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(self.device or "cpu")
        self.reset(self.seed)

    def reset(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(
        self, observation: np.ndarray, goal_observation: np.ndarray, warm_start: Tensor | None
    ) -> PlanResult:
        energy_fn = self.make_energy(observation, goal_observation)
        return optimize(
            energy_fn, self.config, self.action_dim, warm_start, self.generator, self.device
        )


def oracle_energy(
    world: TwoRooms,
    position: np.ndarray,
    goal: np.ndarray,
    action_repeat: int = 1,
    energy: Energy = "final",
    norm: Literal["l1", "l2"] = "l1",
) -> EnergyFn:
    """An energy computed with the true dynamics: what a perfect world model would give.

    Every candidate ``(S, H, 2)`` is expanded to ``H * action_repeat`` environment steps of
    ``a / action_repeat`` and rolled out with :meth:`TwoRooms.rollout` (all candidates at
    once). The distance to the goal is taken at the ``H`` planned steps -- where a model
    would make its predictions -- as V-JEPA 2-AC's L1 energy (``norm="l1"``) or Euclidean.

    Args:
        world: the dynamics.
        position, goal: ``(2,)`` the true current position and goal (privileged).
        action_repeat: environment steps per planned action.
        energy: how the ``H`` per-step distances become one number:

            * ``"final"``: the distance after the last step (V-JEPA 2-AC). In a receding
              horizon the goal then always sits at the end of the plan, so once the goal is
              within reach the plan may wander anywhere and arrive at step ``H`` -- which
              never comes.
            * ``"sum"``: all steps, rewarding getting close early; myopic -- pressing
              against the wall scores better than the detour through the door.
            * ``"min"``: the closest approach. Success is reaching the goal at *any* step,
              and this is exactly that; it neither wanders nor fears the detour.
        norm: ``"l1"`` or ``"l2"`` distance.

    Returns:
        ``EnergyFn`` mapping ``(S, H, 2)`` to ``(S,)`` on the candidates' device and dtype.
    """
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    if energy not in ("final", "sum", "min"):
        raise ValueError(f"energy must be 'final', 'sum' or 'min', got {energy!r}")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    position = np.asarray(position, dtype=np.float64)
    goal = np.asarray(goal, dtype=np.float64)

    def energy_fn(actions: Tensor) -> Tensor:
        if actions.dim() != 3 or actions.shape[-1] != 2:
            raise ValueError(f"actions must have shape (S, H, 2), got {tuple(actions.shape)}")
        a = actions.detach().cpu().double().numpy() / action_repeat
        steps = np.repeat(a, action_repeat, axis=-2)  # (S, H * R, 2)
        path = world.rollout(position, steps)[:, action_repeat::action_repeat]  # (S, H, 2)
        diff = path - goal
        dist = np.abs(diff).sum(-1) if norm == "l1" else np.linalg.norm(diff, axis=-1)
        e = {"final": dist[:, -1], "sum": dist.sum(-1), "min": dist.min(-1)}[energy]
        return torch.as_tensor(e, dtype=actions.dtype, device=actions.device)

    return energy_fn


def oracle_config(
    world: TwoRooms, action_repeat: int, optimizer: Literal["cem", "mppi"] = "cem", **overrides
) -> OptimizerConfig:
    """A CEM/MPPI config in environment units: the box is ``+-max_speed * action_repeat``
    per dimension and the initial std spans it (override any field by keyword)."""
    bound = world.config.max_speed * action_repeat
    common = {"action_low": -bound, "action_high": bound, "min_std": 0.05 * bound}
    if optimizer == "cem":
        return CEMConfig(**{**common, "init_std": bound, **overrides})
    if optimizer == "mppi":
        return MPPIConfig(**{**common, "noise_std": bound, **overrides})
    raise ValueError(f"optimizer must be 'cem' or 'mppi', got {optimizer!r}")


class OraclePlanner:
    """CEM/MPPI on :func:`oracle_energy` -- privileged: it reads the true position and goal.

    Args:
        world: the dynamics.
        config: optimiser config in environment units; default :func:`oracle_config`.
        action_repeat: environment steps per planned action.
        energy, norm: see :func:`oracle_energy`; ``"min"`` by default because it is the one
            of the three that solves the door task reliably (see there).
        seed: seeds the sampling noise; :meth:`reset` reseeds it per episode.
    """

    privileged: ClassVar[bool] = True

    def __init__(
        self,
        world: TwoRooms,
        config: OptimizerConfig | None = None,
        action_repeat: int = 1,
        energy: Energy = "min",
        norm: Literal["l1", "l2"] = "l1",
        seed: int = 0,
    ) -> None:
        self.world = world
        self.config = config or oracle_config(world, action_repeat)
        self.action_repeat = action_repeat
        self.energy = energy
        self.norm = norm
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(
        self,
        observation: np.ndarray,
        goal_observation: np.ndarray,
        warm_start: Tensor | None,
        *,
        info: dict,
    ) -> PlanResult:
        energy_fn = oracle_energy(
            self.world,
            info["position"],
            info["goal"],
            self.action_repeat,
            self.energy,
            self.norm,
        )
        return optimize(energy_fn, self.config, 2, warm_start, self.generator)


def _single_action(action: np.ndarray) -> PlanResult:
    actions = torch.as_tensor(action, dtype=torch.float32).reshape(1, -1)
    return PlanResult(actions, float("nan"), actions, torch.zeros_like(actions))


class RandomPolicy:
    """Uniformly random direction, fixed speed: one action per replanning step.

    Args:
        max_speed: norm of every action. Actions are displacements over ``action_repeat``
            environment steps, so use ``action_repeat * TwoRoomsConfig.max_speed`` to move
            at the environment's full speed.
        rng: the random source; :meth:`reset` replaces it per episode.
    """

    def __init__(self, max_speed: float, rng: np.random.Generator | None = None) -> None:
        if max_speed <= 0:
            raise ValueError(f"max_speed must be positive, got {max_speed}")
        self.max_speed = max_speed
        self.rng = rng or np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(
        self, observation: np.ndarray, goal_observation: np.ndarray, warm_start: Tensor | None
    ) -> PlanResult:
        angle = self.rng.uniform(0.0, 2 * np.pi)
        return _single_action(self.max_speed * np.array([np.cos(angle), np.sin(angle)]))


class GreedyPolicy:
    """Move straight toward the goal -- privileged: it reads the true position and goal.

    The action is ``goal - position``; the loop spreads it over ``action_repeat`` steps and
    the environment clips each step to ``max_speed``, so the agent walks the straight line at
    full speed and stops on the goal. When the wall is in the way it stays pressed against
    it: the baseline that separates planning from following the gradient of distance.
    """

    privileged: ClassVar[bool] = True

    def __call__(
        self,
        observation: np.ndarray,
        goal_observation: np.ndarray,
        warm_start: Tensor | None,
        *,
        info: dict,
    ) -> PlanResult:
        return _single_action(np.asarray(info["goal"]) - np.asarray(info["position"]))
