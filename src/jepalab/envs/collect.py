"""Collect Two-Rooms episodes with a smooth random-walk policy, as a trajectory dataset.

The data an action-conditioned world model is trained on in PLDM (Sobal et al. 2025) and
EB-JEPA: random exploration, no rewards, frames rendered from the true positions. The policy
is open-loop: each episode draws an initial heading ``theta_0 ~ U[0, 2 pi)``; at every step the
heading drifts, ``theta += N(0, heading_noise)`` with ``heading_noise = 0.6`` rad, and the speed
is ``max_speed * U(0.3, 1.0)``, so the agent wanders in smooth curves rather than jittering in
place, and meets walls from every angle (a blocked move stops just before the wall).

Door starts: from a uniform start a random walk of a few dozen steps almost never finds the
door (9 pixels of a 54-pixel wall, reached only along a few headings), so a model trained on
such data never sees a crossing and a planner cannot learn to use the door. A fraction
``door_start_fraction`` of episodes therefore starts next to the door, within ``2 * max_speed``
pixels of the wall on either side, at the door's rows. The default, half of the episodes
(:data:`DOOR_START_FRACTION`; ~23% of 32-frame episodes then cross), is what planning needs:
with 20% (~10% crossing) the `two_rooms_wm` model got stuck at the corner of the wall below
the door in the failed episodes drawn, and planned 72% of 50 cross-room episodes against 90%
with half (``docs/planning.md``).

All episodes are rolled out at once (``TwoRooms.step`` is vectorised); everything is drawn from
one ``np.random.default_rng(seed)``, so a seed fixes the dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from jepalab.data.trajectories import Episode, write_episodes
from jepalab.envs.two_rooms import TwoRooms, TwoRoomsConfig
from jepalab.progress import progress_bar

HEADING_NOISE = 0.6  # rad per step, std of the heading drift
SPEED_RANGE = (0.3, 1.0)  # step speed as a fraction of max_speed, uniform
DOOR_START_FRACTION = 0.5  # share of episodes started at the door (module docstring)


def random_policy_actions(
    world: TwoRooms,
    rng: np.random.Generator,
    num_episodes: int,
    length: int,
    heading_noise: float = HEADING_NOISE,
    speed_range: tuple[float, float] = SPEED_RANGE,
) -> np.ndarray:
    """Smooth random-walk displacements (see the module docstring).

    Args:
        world: The environment (for ``max_speed``).
        rng: Source of randomness.
        num_episodes: ``E``.
        length: Frames per episode ``T`` (``T - 1`` actions).
        heading_noise: Std of the per-step heading change, radians.
        speed_range: ``(low, high)`` speed as a fraction of ``max_speed``.

    Returns:
        float64 ``(E, T - 1, 2)`` actions ``(dx, dy)`` of norm ``<= max_speed``.
    """
    steps = max(length - 1, 0)
    theta0 = rng.uniform(0.0, 2 * math.pi, (num_episodes, 1))
    theta = theta0 + np.cumsum(rng.normal(0.0, heading_noise, (num_episodes, steps)), axis=1)
    speed = world.config.max_speed * rng.uniform(*speed_range, (num_episodes, steps))
    return speed[..., None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def door_starts(world: TwoRooms, rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` positions at the door's rows within ``2 * max_speed`` of the wall (free)."""
    c = world.config
    margin = 2 * c.max_speed
    x = rng.uniform(c.wall_left - margin, c.wall_right + margin, n)
    y = rng.uniform(*c.door, n)
    return np.clip(np.stack([x, y], axis=-1), *c.arena)


def rollout_random_walk(
    world: TwoRooms,
    rng: np.random.Generator,
    num_episodes: int,
    length: int,
    door_start_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Roll the random walk out from uniform (or door) starts.

    Returns:
        ``(states, actions)``: float32 positions ``(E, T, 2)`` and the clipped float32 actions
        ``(E, T - 1, 2)`` actually applied, with ``states[:, t + 1] == world.step(states[:, t],
        actions[:, t])`` up to float32 rounding (positions are stepped from the stored float32
        value; a stop rounded onto a wall's edge is a free position).
    """
    starts = world.sample_positions(rng, num_episodes)  # a random room, uniform in it
    at_door = rng.permutation(num_episodes)[: round(door_start_fraction * num_episodes)]
    starts[at_door] = door_starts(world, rng, len(at_door))
    raw = random_policy_actions(world, rng, num_episodes, length)
    actions = world.clip_actions(raw).astype(np.float32)
    states = np.empty((num_episodes, length, 2), dtype=np.float32)
    states[:, 0] = starts
    for t in range(length - 1):
        states[:, t + 1] = world.step(states[:, t], actions[:, t])
    return states, actions


def collect_two_rooms(
    root: str | os.PathLike[str],
    num_episodes: int = 1000,
    episode_length: int = 32,
    seed: int = 0,
    door_start_fraction: float = DOOR_START_FRACTION,
    config: TwoRoomsConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Collect random-walk episodes of Two-Rooms into a trajectory dataset at ``root``.

    Frames are uint8 ``(T, 64, 64)`` renders, states the float32 positions ``(T, 2)``, actions
    the clipped float32 displacements ``(T - 1, 2)``. ``meta.json``'s ``source`` records the
    environment config, seed and policy, and ``episodes_changing_room`` (episodes whose room
    changes: door crossings).

    Args:
        root: Output directory.
        num_episodes: Episodes to collect.
        episode_length: Frames per episode.
        seed: Seed of everything (start positions, policy).
        door_start_fraction: Share of episodes started next to the door (module docstring).
        config: Environment geometry (default: the PLDM / EB-JEPA DotWall).
        overwrite: Replace an existing dataset at ``root``.
        progress: Show progress while writing (a bar on a terminal, else lines).

    Returns:
        ``root`` as a ``Path``.
    """
    if num_episodes < 1 or episode_length < 1:
        raise ValueError(
            f"collect_two_rooms: num_episodes={num_episodes} and episode_length="
            f"{episode_length} must be positive."
        )
    if not 0.0 <= door_start_fraction <= 1.0:
        raise ValueError(
            f"collect_two_rooms: door_start_fraction={door_start_fraction} is not in [0, 1]."
        )
    world = TwoRooms(config)
    rng = np.random.default_rng(seed)
    states, actions = rollout_random_walk(
        world, rng, num_episodes, episode_length, door_start_fraction
    )
    rooms = world.room_of(states)
    changing_room = int((rooms != rooms[:, :1]).any(axis=1).sum())
    episodes = (
        Episode(frames=world.render(states[e]), actions=actions[e], states=states[e])
        for e in range(num_episodes)
    )
    max_speed = world.config.max_speed
    source = {
        "env": "two_rooms",
        "config": asdict(world.config),
        "seed": seed,
        "policy": "random_walk",
        "heading_noise": HEADING_NOISE,
        "speed_range": list(SPEED_RANGE),
        "episode_length": episode_length,
        "door_start_fraction": door_start_fraction,
        "episodes_changing_room": changing_room,
    }
    bar = progress_bar(
        episodes, total=num_episodes, desc="writing episodes", enabled=progress, unit="episode"
    )
    return write_episodes(
        root,
        bar,
        fps=None,
        action_low=[-max_speed, -max_speed],
        action_high=[max_speed, max_speed],
        source=source,
        overwrite=overwrite,
    )
