"""Collect episodes of a Gymnasium environment (stable-worldmodel's ``swm/TwoRoom-v1``,
``swm/PushT-v1``, ...) as a jepalab trajectory dataset (docs/trajectories.md).

``jepalab collect env=swm/TwoRoom-v1 policy=expert episodes=200``

Each episode stores the frames resized to ``image_size`` (RGB uint8), the actions the policy
took, and the environment's true state at every frame (TwoRoom: the agent's position;
Push-T: agent x, y, block x, y, angle, agent velocity), plus the episode's goal state and
goal frame: what stable-worldmodel's dataset evaluation needs to put the environment back in
a recorded state and aim it at a later one (``_set_state`` / ``_set_goal_state``).

Policies (``policy=``):

* ``random``: actions uniform in the action space;
* ``expert``: stable-worldmodel's ``ExpertPolicy`` (TwoRoom only: to the target, through a
  door when it is in the other room) with the noise of their data collection
  (``scripts/data/collect_tworooms.py`` at 0.1.1: ``action_noise=2.0``,
  ``action_repeat_prob=0.05``), so the agent wanders as in their ``tworoom`` dataset instead
  of reaching the target and idling there;
* ``weak``: stable-worldmodel's ``WeakPolicy`` (Push-T only: random moves within 100 px of
  the block, so that the agent pushes it), the data its Push-T models are trained on.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jepalab.data.trajectories import Episode, write_episodes
from jepalab.envs.gymnasium import EnvError, GymnasiumEnv
from jepalab.progress import progress_bar

POLICIES = ("random", "expert", "weak")
Policy = Callable[[dict[str, Any]], np.ndarray]

# the environments each of stable-worldmodel's scripted policies is written for
_SCRIPTED = {"expert": ("swm/TwoRoom", "two_room", "ExpertPolicy"),
             "weak": ("swm/PushT", "pusht", "WeakPolicy")}  # fmt: skip
# their collection scripts' settings (scripts/data/collect_{tworooms,weak_pusht}.py, 0.1.1)
_COLLECTION_SETTINGS = {"expert": {"action_noise": 2.0, "action_repeat_prob": 0.05},
                        "weak": {"dist_constraint": 100}}  # fmt: skip


def make_policy(name: str, env: GymnasiumEnv, seed: int) -> Policy:
    """``info -> action`` for the policy ``name`` (module docstring), seeded."""
    if name not in POLICIES:
        raise EnvError(f"policy={name!r} is not one of {POLICIES}")
    space = env.env.action_space
    if name == "random":
        rng = np.random.default_rng(seed)
        low, high = (
            np.broadcast_to(space.low, space.shape),
            np.broadcast_to(space.high, space.shape),
        )
        return lambda info: rng.uniform(low, high).astype(np.float32)
    prefix, module, cls = _SCRIPTED[name]
    if not env.env_id.startswith(prefix):
        raise EnvError(f"policy={name} is stable-worldmodel's {cls}, for {prefix}-* only")
    import importlib

    policy_cls = getattr(importlib.import_module(f"stable_worldmodel.envs.{module}"), cls)
    policy = policy_cls(seed=seed, **_COLLECTION_SETTINGS[name])
    if name == "weak":  # written for World's vectorised env: give it a batch of one
        shape = (1, *space.shape)
        policy.set_env(
            types.SimpleNamespace(
                envs=[env.env], spec=env.env.spec, action_space=types.SimpleNamespace(shape=shape)
            )
        )
        return lambda info: np.asarray(policy.get_action(info), dtype=np.float32)[0]
    policy.set_env(env.env)
    return lambda info: np.asarray(policy.get_action(info), dtype=np.float32).reshape(space.shape)


def rollout(env: GymnasiumEnv, policy: Policy, length: int, seed: int) -> Episode:
    """One episode of ``length`` frames from ``env.reset(seed=seed)``."""
    frame, info = env.reset(seed=seed)
    frames, states, actions = [frame], [info["state"]], []
    for _ in range(length - 1):
        action = policy({**env.raw_info(), **info})
        frame, _, _, _, info = env.step(action)
        actions.append(action)
        frames.append(frame)
        states.append(info["state"])
    return Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions, dtype=np.float32).reshape(length - 1, -1),
        states=np.asarray(states, dtype=np.float32),
        goal_frame=env.render_goal(),
        goal_state=np.asarray(env.goal_state, dtype=np.float32),
    )


def collect_gymnasium(
    root: str | os.PathLike[str],
    env_id: str,
    policy: str = "random",
    num_episodes: int = 100,
    episode_length: int = 100,
    seed: int = 0,
    image_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
    **make_kwargs: Any,
) -> Path:
    """Collect ``num_episodes`` episodes of ``env_id`` under ``policy`` into ``root``.

    Episode ``i`` is reset with seed ``seed + i`` and its policy seeded with it, so a seed
    fixes the dataset. ``meta.json``'s ``source`` records the environment, policy, seed,
    sizes and the stable-worldmodel version.
    """
    if num_episodes < 1 or episode_length < 2:
        raise EnvError(
            f"collect {env_id}: episodes={num_episodes} must be >= 1 and length="
            f"{episode_length} >= 2"
        )
    env = GymnasiumEnv(env_id, image_size=image_size, **make_kwargs)
    make_policy(policy, env, seed)  # a bad policy fails before anything is written

    def episodes() -> Iterator[Episode]:
        for i in range(num_episodes):
            yield rollout(env, make_policy(policy, env, seed + i), episode_length, seed + i)

    space = env.env.action_space
    source = {
        "env": env_id,
        "policy": policy,
        "seed": seed,
        "image_size": image_size,
        "episode_length": episode_length,
        "make_kwargs": make_kwargs,
        "stable_worldmodel": _version("stable_worldmodel"),
        "state": "info['state'] or the vector observation (jepalab.envs.gymnasium)",
    }
    bar = progress_bar(
        episodes(), total=num_episodes, desc="collecting", enabled=progress, unit="episode"
    )
    try:
        return write_episodes(
            root,
            bar,
            fps=None,
            action_low=[float(v) for v in np.broadcast_to(space.low, space.shape)],
            action_high=[float(v) for v in np.broadcast_to(space.high, space.shape)],
            source=source,
            overwrite=overwrite,
        )
    finally:
        env.close()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return None


__all__ = ["POLICIES", "collect_gymnasium", "make_policy", "rollout"]
