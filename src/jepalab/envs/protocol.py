"""What the planning loop needs of an environment (:func:`jepalab.planning.mpc.run_episode`).

Gymnasium's API plus a goal: any environment with these methods can be planned in, and
:class:`~jepalab.envs.two_rooms.TwoRoomsEnv` (ours) and the Gymnasium adapter
(:mod:`jepalab.envs.gymnasium`, stable-worldmodel's TwoRoom and Push-T) both are one.

``info`` (from ``reset`` and ``step``) carries, for evaluation and privileged baselines
only -- a planner sees frames:

=============  ==============================================================================
``state``      the true state, a float vector (Two-Rooms: the agent's position)
``goal_state`` the goal's state
``distance``   the environment's own distance to the goal (Two-Rooms: pixels)
``success``    whether the goal is reached now (Gymnasium's ``terminated``)
=============  ==============================================================================
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

INFO_KEYS = ("state", "goal_state", "distance", "success")


@runtime_checkable
class PlanningEnv(Protocol):
    """An environment to plan in (module docstring).

    Attributes:
        max_steps: the default budget of environment steps per episode.
    """

    max_steps: int

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: a task drawn from ``seed``, or the ``options`` ``"start"`` and
        ``"goal"`` states where given. Returns the frame and ``info``."""
        ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Gymnasium's ``(frame, reward, terminated, truncated, info)``; ``terminated`` is
        success."""
        ...

    def render(self) -> np.ndarray:
        """The current frame, as the world model sees it."""
        ...

    def render_goal(self) -> np.ndarray:
        """The goal's frame, the same size as :meth:`render`'s."""
        ...


def check_info(info: dict[str, Any], where: str) -> None:
    """One clear error when an environment's ``info`` lacks a key the loop reads."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"{where}: info lacks {missing}; a planning environment gives {INFO_KEYS}")


__all__ = ["INFO_KEYS", "PlanningEnv", "check_info"]
