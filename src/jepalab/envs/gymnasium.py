"""Any Gymnasium environment with an ``rgb_array`` render as a planning environment
(:class:`~jepalab.envs.protocol.PlanningEnv`), and stable-worldmodel's in particular.

stable-worldmodel (``pip install 'jepalab[envs]'``; Gymnasium ids ``swm/TwoRoom-v1``,
``swm/PushT-v1``, ...) is the field's shared benchmark for latent world models. Its
environments can be put in a given state and given a goal state
(``unwrapped._set_state`` / ``_set_goal_state``, the calls of its own dataset evaluation,
``stable_worldmodel.world.World._evaluate_from_dataset``): that is what
``reset(options={"start": s, "goal": g})`` uses, so an episode can start from a dataset row
and aim at a later row's state.

What the adapter adds to the environment's own API:

* frames resized to ``image_size`` (``render`` is 224 px in stable-worldmodel), RGB uint8;
* the goal's frame (:meth:`GymnasiumEnv.render_goal`): the environment rendered in the goal
  state, as a dataset's goal frame is the frame of a later step;
* ``info`` with ``state``, ``goal_state``, ``distance`` and ``success`` (``terminated``):
  ``state`` is the environment's ``info["state"]`` (TwoRoom: the agent's position) or else
  its vector observation (Push-T: agent x, y, block x, y, angle, agent velocity); the
  distance is Euclidean over the first ``min(4, S)`` state dimensions (TwoRoom: pixels to
  the target; Push-T: agent and block positions, the position part of its success test).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from jepalab.errors import ConfigError, UserError

# success radius of environments whose test lives inside ``step`` only
_SUCCESS_RADIUS = {"swm/TwoRoom-v1": 16.0}  # two_room/env.py, TwoRoomEnv.step

EXTRA_HINT = "pip install 'jepalab[envs]' (stable-worldmodel and what its environments need)"


class EnvError(UserError, ValueError):
    """An environment cannot be used as asked (names the id)."""


def import_gymnasium(env_id: str) -> Any:
    """``gymnasium``, with stable-worldmodel's ids registered when ``env_id`` is one."""
    try:
        gymnasium = importlib.import_module("gymnasium")
        if env_id.startswith("swm/"):
            import warnings

            with warnings.catch_warnings():  # "ale-py not found": Atari is not needed here
                warnings.simplefilter("ignore")
                importlib.import_module("stable_worldmodel")
    except ImportError as exc:
        raise EnvError(f"{env_id}: {exc.name or exc} is not installed; {EXTRA_HINT}") from exc
    return gymnasium


def make_env(env_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id, render_mode="rgb_array", **kwargs)`` with one-line errors."""
    gymnasium = import_gymnasium(env_id)
    try:
        # the passive checker warns on every step of stable-worldmodel's torch observations,
        # and Box.contains on every Push-T step
        kwargs.setdefault("disable_env_checker", True)
        import warnings

        warnings.filterwarnings("ignore", message=".*Casting input x to numpy array")
        return gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
    except gymnasium.error.Error as exc:  # NameNotFound, VersionNotFound, ...
        known = sorted(k for k in gymnasium.registry if k.startswith(env_id.split("/")[0] + "/"))
        hint = f"; registered: {', '.join(known[:12])}" if "/" in env_id and known else ""
        raise EnvError(f"unknown environment {env_id!r} ({exc}){hint}") from exc


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 frame as ``(size, size, 3)`` (bilinear, antialiased)."""
    from PIL import Image

    if frame.shape[:2] == (size, size):
        return np.ascontiguousarray(frame)
    image = Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(image)  # writable (torch.as_tensor warns on a read-only array)


class GymnasiumEnv:
    """A Gymnasium environment as a :class:`~jepalab.envs.protocol.PlanningEnv`.

    Args:
        env_id: a registered id, e.g. ``"swm/TwoRoom-v1"``, ``"swm/PushT-v1"``.
        image_size: side of the frames given to the model (the render is resized).
        max_steps: default step budget of an episode (stable-worldmodel's protocol: 50).
        **make_kwargs: passed to ``gymnasium.make`` (e.g. ``resolution=`` of Push-T).
    """

    def __init__(
        self, env_id: str, image_size: int = 64, max_steps: int = 50, **make_kwargs: Any
    ) -> None:
        if image_size < 1 or max_steps < 1:
            raise ConfigError(f"{env_id}: image_size and max_steps must be positive")
        self.env_id, self.image_size, self.max_steps = env_id, int(image_size), int(max_steps)
        self.env = make_env(env_id, **make_kwargs)
        self.unwrapped = self.env.unwrapped
        space = self.env.action_space
        if not hasattr(space, "low") or not np.issubdtype(space.dtype, np.floating):
            self.env.close()
            raise EnvError(
                f"{env_id} has a {type(space).__name__} action space; planning in latent space "
                "optimises continuous (Box) actions"
            )
        self._goal_frame: np.ndarray | None = None
        self._goal_state: np.ndarray | None = None
        self._last_obs: Any = None

    # -- the protocol -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with ``seed``; ``options["start"]`` / ``options["goal"]`` set the state and
        the goal state (their ``_set_state`` / ``_set_goal_state``)."""
        options = options or {}
        obs, info = self.env.reset(seed=seed)
        self._last_obs = obs
        start = options.get("start")
        goal = options.get("goal", info.get("goal_state"))
        if goal is None:
            raise EnvError(f"{self.env_id} reports no goal_state; give options['goal']")
        if start is None:
            start = self._state(obs, info)
        goal = np.asarray(goal, dtype=np.float64)
        self._set_state(goal)  # the goal's frame: the environment in the goal state
        self._goal_frame = self.render()
        self._call("_set_goal_state", goal)
        self._goal_state = goal
        self._set_state(np.asarray(start, dtype=np.float64))
        self._last_obs = self._observation()
        return self.render(), self._info(self._last_obs, {}, terminated=self._success())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action))
        self._last_obs = obs
        out = self._info(obs, info, terminated=bool(terminated))
        return self.render(), float(reward), bool(terminated), bool(truncated), out

    def render(self) -> np.ndarray:
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise EnvError(
                f"{self.env_id} has no rgb_array render (got {shape}); a world model needs pixels"
            )
        return resize_frame(frame.astype(np.uint8, copy=False), self.image_size)

    def render_goal(self) -> np.ndarray:
        if self._goal_frame is None:
            raise EnvError(f"{self.env_id}: render_goal() before reset()")
        return self._goal_frame

    def close(self) -> None:
        self.env.close()

    # -- state ------------------------------------------------------------------------------
    @property
    def goal_state(self) -> np.ndarray:
        if self._goal_state is None:
            raise EnvError(f"{self.env_id}: no goal before reset()")
        return self._goal_state

    def state(self) -> np.ndarray:
        """The current true state (see the module docstring)."""
        return self._state(self._last_obs, self.raw_info())

    def _state(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        if "state" in info:
            return np.asarray(info["state"], dtype=np.float64).reshape(-1)
        if isinstance(obs, dict) and "state" in obs:
            return np.asarray(obs["state"], dtype=np.float64).reshape(-1)
        return np.asarray(obs, dtype=np.float64).reshape(-1)

    def raw_info(self) -> dict[str, Any]:
        """The environment's own ``info`` now (what its scripted policies read)."""
        get = getattr(self.unwrapped, "_get_info", None)
        return dict(get()) if callable(get) else {}

    def _observation(self) -> Any:
        get = getattr(self.unwrapped, "_get_obs", None)
        return get() if callable(get) else self._last_obs

    def _set_state(self, state: np.ndarray) -> None:
        self._call("_set_state", state)

    def _call(self, method: str, value: np.ndarray) -> None:
        fn = getattr(self.unwrapped, method, None)
        if not callable(fn):
            raise EnvError(
                f"{self.env_id} cannot be put in a given state (no {method}); starts and goals "
                "from a dataset need stable-worldmodel's environments"
            )
        fn(value)

    def distance(self, state: np.ndarray) -> float:
        k = min(4, len(state), len(self.goal_state))
        return float(np.linalg.norm(state[:k] - self.goal_state[:k]))

    def _success(self) -> bool:
        """Success without stepping, as the environment's ``terminated`` would say: its own
        test where it has one (Push-T: ``eval_state``), TwoRoom's 16 px, else ``False``."""
        check = getattr(self.unwrapped, "eval_state", None)
        state = self.state()
        if callable(check):
            result = check(self.goal_state, state)
            return bool(result[0] if isinstance(result, tuple) else result)
        radius = _SUCCESS_RADIUS.get(self.env_id)
        return radius is not None and self.distance(state) < radius

    def _info(self, obs: Any, info: dict[str, Any], terminated: bool) -> dict[str, Any]:
        state = self._state(obs, {**self.raw_info(), **info})
        return {
            "state": state,
            "goal_state": self.goal_state.copy(),
            "distance": self.distance(state),
            "success": bool(terminated),
        }


__all__ = ["EXTRA_HINT", "EnvError", "GymnasiumEnv", "import_gymnasium", "make_env", "resize_frame"]
