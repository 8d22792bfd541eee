"""Two-Rooms dynamics: walls block, the door passes, actions are clipped, rendering is right."""

from __future__ import annotations

import numpy as np
import pytest

from jepalab.envs import TwoRooms, TwoRoomsConfig, TwoRoomsEnv
from jepalab.envs.protocol import INFO_KEYS, PlanningEnv

WORLD = TwoRooms()
C = WORLD.config


def test_actions_are_clipped_to_the_speed_limit_keeping_their_direction():
    actions = np.array([[10.0, 0.0], [3.0, 4.0], [0.5, -0.5], [0.0, 0.0]])
    clipped = WORLD.clip_actions(actions)
    norms = np.linalg.norm(clipped, axis=-1)
    np.testing.assert_allclose(norms[:2], C.max_speed)
    np.testing.assert_allclose(clipped[1] / norms[1], [0.6, 0.8])
    np.testing.assert_allclose(clipped[2:], actions[2:])  # already within the limit
    moved = WORLD.step(np.array([10.0, 40.0]), np.array([100.0, 0.0]))
    np.testing.assert_allclose(moved, [10.0 + C.max_speed, 40.0])


@pytest.mark.parametrize("y", [20.0, 40.0, 55.0])
def test_the_wall_blocks_outside_the_door(y):
    start = np.array([C.wall_left - 1.0, y])
    end = WORLD.step(start, np.array([2.4, 0.0]))
    assert end[0] < C.wall_left and end[0] > start[0]  # stopped just before the wall
    assert C.wall_left - end[0] < 1e-3
    # from the right side too, and a stopped agent can still move away
    right = WORLD.step(np.array([C.wall_right + 1.0, y]), np.array([-2.4, 0.0]))
    assert right[0] > C.wall_right
    away = WORLD.step(end, np.array([-2.0, 0.0]))
    np.testing.assert_allclose(away, end - [2.0, 0.0])


def test_the_door_lets_the_agent_through():
    path = WORLD.rollout(np.array([25.0, C.door_y]), np.tile([2.4, 0.0], (6, 1)))
    assert path[-1, 0] > C.wall_right  # crossed
    np.testing.assert_allclose(path[:, 1], C.door_y)
    assert WORLD.room_of(path[0]) == 0 and WORLD.room_of(path[-1]) == 1


def test_inside_the_door_the_wall_rows_block_vertical_moves():
    inside = np.array([C.wall_x, C.door_y])
    up = WORLD.step(inside, np.array([0.0, -2.4]))
    np.testing.assert_allclose(up, inside + [0.0, -2.4])  # still within the door rows
    edge = np.array([C.wall_x, C.door[1] - 0.5])
    down = WORLD.step(edge, np.array([0.0, 2.4]))
    assert down[1] <= C.door[1] and down[1] > edge[1]


def test_the_border_keeps_the_agent_in_the_arena():
    lo, hi = C.arena
    np.testing.assert_allclose(WORLD.step(np.array([lo + 1, lo + 1]), np.array([-2, -2])), [lo, lo])
    np.testing.assert_allclose(WORLD.step(np.array([hi - 1, hi - 1]), np.array([2, 2])), [hi, hi])


def test_random_walks_never_enter_the_wall():
    rng = np.random.default_rng(0)
    pos = WORLD.sample_positions(rng, 500)
    for _ in range(60):
        pos = WORLD.step(pos, rng.normal(0, 3, size=pos.shape))
        assert WORLD.is_free(pos).all()


def test_rendering_draws_the_agent_at_its_position_and_the_walls():
    frame = WORLD.render(np.array([20.0, 40.0]))
    assert frame.shape == (C.img_size, C.img_size) and frame.dtype == np.uint8
    assert frame[40, 20] == 255 and np.unravel_index(frame.argmax(), frame.shape) == (40, 20)
    wall_level = round(255 * TwoRooms.WALL_LEVEL)
    assert frame[40, 32] == wall_level  # the wall, below the door
    assert frame[int(C.door_y), 32] == 0  # the door is open
    assert frame[2, 2] == 0 and frame[int(C.arena[0]) - 1, 20] == wall_level  # the border


def test_tasks_put_start_and_goal_in_different_rooms_and_the_env_reports_success():
    env = TwoRoomsEnv()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert WORLD.room_of(info["position"]) != WORLD.room_of(info["goal"])
        assert WORLD.is_free(info["position"]) and WORLD.is_free(info["goal"])
    env.reset(seed=0, start=np.array([20.0, 40.0]), goal=np.array([22.0, 40.0]))
    _, reward, terminated, truncated, info = env.step(np.array([2.0, 0.0]))
    assert terminated and info["success"] and reward == 1.0 and not truncated
    assert info["distance"] < C.success_radius


def test_two_rooms_is_a_planning_env_with_gymnasium_signatures():
    """The protocol of the planning loop: reset(seed, options), the 5-tuple step, render and
    render_goal, info with state, goal_state, distance, success; truncated at max_steps."""
    env = TwoRoomsEnv(TwoRoomsConfig(max_steps=3))
    assert isinstance(env, PlanningEnv) and env.max_steps == 3
    start, goal = np.array([10.0, 40.0]), np.array([50.0, 40.0])
    frame, info = env.reset(seed=1, options={"start": start, "goal": goal})
    assert set(INFO_KEYS) <= set(info) and not info["success"]
    np.testing.assert_array_equal(info["state"], start)
    np.testing.assert_array_equal(info["goal_state"], goal)
    np.testing.assert_array_equal(frame, env.render())
    np.testing.assert_array_equal(env.render_goal(), WORLD.render(goal))
    outcomes = [env.step(np.array([0.0, 0.0]))[1:4] for _ in range(3)]
    assert outcomes == [(0.0, False, False), (0.0, False, False), (0.0, False, True)]


def test_a_wall_outside_the_arena_is_a_clear_error():
    with pytest.raises(ValueError, match="inside the arena"):
        TwoRoomsConfig(wall_x=70.0)
