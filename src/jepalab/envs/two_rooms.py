"""Two-Rooms: a point agent navigating between two rooms joined by a door (numpy only).

In the style of the "Two-Rooms" / DotWall benchmark of PLDM (Sobal et al. 2025) and EB-JEPA:
a 64x64 image, an arena enclosed by a border wall, split by a vertical wall of width 3 at
``x = 32`` with a door of half-height 4 centred at ``y = 10``; the agent is a Gaussian dot;
actions are 2-D displacements whose norm is clipped to ``max_speed = 2.45`` pixels; a move
that would cross a wall stops just before it. An episode succeeds when the agent ends within
``success_radius = 4.5`` pixels of the goal (DINO-WM's threshold), within ``max_steps = 200``.

Coordinates are ``(x, y)`` in pixels: ``x`` is the column, ``y`` the row, pixel centres at
integers. Everything is vectorised over leading dimensions, so a planner or a data collector
steps thousands of agents at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-4  # how far before a wall a blocked move stops


@dataclass(frozen=True)
class TwoRoomsConfig:
    """Geometry and dynamics of the environment (defaults: PLDM / EB-JEPA DotWall)."""

    img_size: int = 64
    border: float = 5.0  # the arena is [border, img_size - 1 - border]^2; the wall drawn outside
    wall_x: float = 32.0  # centre column of the dividing wall
    wall_width: float = 3.0
    door_y: float = 10.0  # centre row of the door
    door_half_height: float = 4.0
    dot_std: float = 1.3  # pixels; the agent is drawn as exp(-d^2 / (2 std^2))
    max_speed: float = 2.45  # largest action norm, pixels per step
    success_radius: float = 4.5
    max_steps: int = 200

    def __post_init__(self) -> None:
        lo, hi = self.arena
        if not lo < self.wall_left < self.wall_right < hi:
            raise ValueError(
                f"the wall [{self.wall_left}, {self.wall_right}] must lie inside the arena "
                f"[{lo}, {hi}]"
            )
        if self.max_speed <= 0 or self.door_half_height <= 0:
            raise ValueError("max_speed and door_half_height must be positive")

    @property
    def arena(self) -> tuple[float, float]:
        return self.border, self.img_size - 1 - self.border

    @property
    def wall_left(self) -> float:
        return self.wall_x - self.wall_width / 2

    @property
    def wall_right(self) -> float:
        return self.wall_x + self.wall_width / 2

    @property
    def door(self) -> tuple[float, float]:
        return self.door_y - self.door_half_height, self.door_y + self.door_half_height


class TwoRooms:
    """The dynamics, renderer and task sampler of the Two-Rooms world (stateless, batched)."""

    def __init__(self, config: TwoRoomsConfig | None = None) -> None:
        self.config = config or TwoRoomsConfig()
        c = self.config
        grid = np.arange(c.img_size, dtype=np.float32)
        self._xs, self._ys = grid[None, :], grid[:, None]  # column and row coordinates
        self._walls = self._wall_image()

    # -- dynamics ---------------------------------------------------------------------------
    def clip_actions(self, actions: np.ndarray) -> np.ndarray:
        """Scale actions ``(..., 2)`` down to norm ``<= max_speed`` (direction kept)."""
        actions = np.asarray(actions, dtype=np.float64)
        norm = np.linalg.norm(actions, axis=-1, keepdims=True)
        scale = np.minimum(1.0, self.config.max_speed / np.maximum(norm, 1e-12))
        return actions * scale

    def step(self, positions: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next positions ``(..., 2)``: move by the clipped action unless a wall is in the way.

        The agent moves along the straight segment ``p -> p + a``; it may be inside the wall's
        column only within the door's rows. The first time the segment would violate that,
        the agent stops just before it. The border clamps the result to the arena.
        """
        c = self.config
        p = self._out_of_wall(np.asarray(positions, dtype=np.float64))
        d = self.clip_actions(actions)
        p, d = np.broadcast_arrays(p, d)
        # Times t in [0, 1] at which x(t) = p.x + t d.x lies in the wall's column ...
        t_col = _interval_times(p[..., 0], d[..., 0], c.wall_left, c.wall_right)
        # ... and at which y(t) lies within the door's rows.
        t_door = _interval_times(p[..., 1], d[..., 1], *c.door)
        enter, leave = t_col
        door_in, door_out = t_door
        in_column = enter < leave  # the segment enters the column (touching its edge is free)
        # First violating time: entering the column outside the door, or leaving the door's
        # rows while still in the column.
        t_stop = np.full(p.shape[:-1], np.inf)
        outside_door_at_entry = in_column & ((enter < door_in) | (enter > door_out))
        t_stop = np.where(outside_door_at_entry, enter, t_stop)
        leaves_door = in_column & ~outside_door_at_entry & (door_out < leave)
        t_stop = np.where(leaves_door, door_out, t_stop)
        speed = np.maximum(np.linalg.norm(d, axis=-1), 1e-12)
        t = np.clip(np.minimum(1.0, t_stop - _EPS / speed), 0.0, 1.0)
        nxt = p + t[..., None] * d
        lo, hi = c.arena
        return np.clip(nxt, lo, hi)

    def _in_solid_wall(self, p: np.ndarray) -> np.ndarray:
        """True strictly inside the dividing wall outside the door; its edges are free, as
        :meth:`step` lets an agent touch them (a stop rounded to float32 lands there)."""
        c = self.config
        x, y = p[..., 0], p[..., 1]
        return (x > c.wall_left) & (x < c.wall_right) & ((y < c.door[0]) | (y > c.door[1]))

    def _out_of_wall(self, p: np.ndarray) -> np.ndarray:
        """Positions given inside the solid wall moved to its nearer edge, so they can move."""
        solid = self._in_solid_wall(p)
        if not solid.any():
            return p
        c = self.config
        x = p[..., 0]
        edge = np.where(x - c.wall_left < c.wall_right - x, c.wall_left, c.wall_right)
        return np.stack([np.where(solid, edge, x), p[..., 1]], axis=-1)

    def rollout(self, position: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Positions ``(..., H + 1, 2)`` visited by applying actions ``(..., H, 2)`` in turn."""
        p = np.asarray(position, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        p = np.broadcast_to(p, actions.shape[:-2] + (2,))
        path = [p]
        for h in range(actions.shape[-2]):
            p = self.step(p, actions[..., h, :])
            path.append(p)
        return np.stack(path, axis=-2)

    # -- geometry ---------------------------------------------------------------------------
    def room_of(self, positions: np.ndarray) -> np.ndarray:
        """0 for the left room, 1 for the right room (the door's column counts as the
        side of the wall's centre)."""
        return (np.asarray(positions)[..., 0] > self.config.wall_x).astype(np.int64)

    def is_free(self, positions: np.ndarray) -> np.ndarray:
        """True where a position is inside the arena and not inside the wall (edges count as
        free, as for :meth:`step`)."""
        p = np.asarray(positions)
        lo, hi = self.config.arena
        return np.all((p >= lo) & (p <= hi), axis=-1) & ~self._in_solid_wall(p)

    def sample_positions(
        self, rng: np.random.Generator, n: int, room: int | np.ndarray | None = None
    ) -> np.ndarray:
        """``(n, 2)`` uniform free positions, in ``room`` (0 left, 1 right) if given."""
        c = self.config
        lo, hi = c.arena
        margin = 2 * c.dot_std  # keep the dot clear of the walls, like the reference
        x_ranges = {0: (lo, c.wall_left - margin), 1: (c.wall_right + margin, hi)}
        rooms = rng.integers(0, 2, n) if room is None else np.broadcast_to(room, (n,))
        x_lo = np.where(rooms == 0, x_ranges[0][0], x_ranges[1][0])
        x_hi = np.where(rooms == 0, x_ranges[0][1], x_ranges[1][1])
        x = x_lo + rng.random(n) * (x_hi - x_lo)
        y = lo + rng.random(n) * (hi - lo)
        return np.stack([x, y], axis=-1)

    def sample_task(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A start and a goal ``(2,)`` in different rooms (which room starts is random)."""
        room = int(rng.integers(0, 2))
        start = self.sample_positions(rng, 1, room)[0]
        goal = self.sample_positions(rng, 1, 1 - room)[0]
        return start, goal

    def is_success(self, positions: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.asarray(positions) - goals, axis=-1) < self.config.success_radius

    # -- rendering --------------------------------------------------------------------------
    def _wall_image(self) -> np.ndarray:
        c = self.config
        xs, ys = self._xs, self._ys
        lo, hi = c.arena
        column = (xs >= c.wall_left) & (xs <= c.wall_right)
        door = (ys >= c.door[0]) & (ys <= c.door[1])
        outside = (xs < lo - 0.5) | (xs > hi + 0.5) | (ys < lo - 0.5) | (ys > hi + 0.5)
        border_line = outside & (
            (xs >= lo - 1.5) & (xs <= hi + 1.5) & (ys >= lo - 1.5) & (ys <= hi + 1.5)
        )
        return ((column & ~door & ~outside) | border_line).astype(np.float32)

    WALL_LEVEL = 0.5  # grey level of walls; the agent is white

    def render(self, positions: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` uint8 grayscale frames: walls grey, the agent a white Gaussian dot."""
        c = self.config
        p = np.asarray(positions, dtype=np.float32)
        lead = p.shape[:-1]
        p = p.reshape(-1, 2)
        dx = self._xs[None] - p[:, 0, None, None]
        dy = self._ys[None] - p[:, 1, None, None]
        dot = np.exp(-(dx * dx + dy * dy) / (2 * c.dot_std**2))
        image = np.maximum(dot, self.WALL_LEVEL * self._walls[None])
        frames = np.round(image * 255.0).astype(np.uint8)
        return frames.reshape(*lead, c.img_size, c.img_size)


def _interval_times(
    start: np.ndarray, delta: np.ndarray, low: float, high: float
) -> tuple[np.ndarray, np.ndarray]:
    """``[t0, t1] ∩ [0, 1]`` during which ``start + t * delta`` lies in ``[low, high]``;
    an empty interval has ``t0 > t1``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (low - start) / delta
        tb = (high - start) / delta
    moving = delta != 0
    inside = (start >= low) & (start <= high)
    t0 = np.where(moving, np.minimum(ta, tb), np.where(inside, -np.inf, np.inf))
    t1 = np.where(moving, np.maximum(ta, tb), np.where(inside, np.inf, -np.inf))
    return np.maximum(t0, 0.0), np.minimum(t1, 1.0)


class TwoRoomsEnv:
    """One episode at a time, a :class:`~jepalab.envs.protocol.PlanningEnv`: Gymnasium's
    ``reset(seed, options) -> frame, info`` and ``step(a) -> frame, reward, terminated,
    truncated, info``, plus :meth:`render_goal`. ``info`` holds the true ``state`` (the
    position; also as ``position``), ``goal_state`` (also ``goal``), ``distance`` in pixels
    and ``success`` (for evaluation only: a planner sees the frames)."""

    def __init__(self, config: TwoRoomsConfig | None = None) -> None:
        self.world = TwoRooms(config)
        self.config = self.world.config
        self.position = np.zeros(2)
        self.goal = np.zeros(2)
        self.steps = 0

    @property
    def max_steps(self) -> int:
        return self.config.max_steps

    def reset(
        self,
        seed: int | None = None,
        start: np.ndarray | None = None,
        goal: np.ndarray | None = None,
        *,
        options: dict | None = None,
    ) -> tuple[np.ndarray, dict]:
        """A task drawn from ``seed``; ``start``/``goal`` (or ``options["start"]``,
        ``options["goal"]``) fix it."""
        options = options or {}
        start = options.get("start") if start is None else start
        goal = options.get("goal") if goal is None else goal
        rng = np.random.default_rng(seed)
        task_start, task_goal = self.world.sample_task(rng)
        self.position = np.asarray(task_start if start is None else start, dtype=np.float64)
        self.goal = np.asarray(task_goal if goal is None else goal, dtype=np.float64)
        self.steps = 0
        return self.observation(), self.info()

    def observation(self) -> np.ndarray:
        return self.world.render(self.position)

    def goal_observation(self) -> np.ndarray:
        return self.world.render(self.goal)

    render = observation
    render_goal = goal_observation

    def info(self) -> dict:
        distance = float(np.linalg.norm(self.position - self.goal))
        success = bool(self.world.is_success(self.position, self.goal))
        return {
            "state": self.position.copy(),
            "goal_state": self.goal.copy(),
            "distance": distance,
            "success": success,
            "position": self.position.copy(),
            "goal": self.goal.copy(),
        }

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = self.world.step(self.position, action)
        self.steps += 1
        info = self.info()
        truncated = not info["success"] and self.steps >= self.config.max_steps
        return self.observation(), float(info["success"]), info["success"], truncated, info
