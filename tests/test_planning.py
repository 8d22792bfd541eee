"""Planning: CEM / MPPI on known energies, the MPC loop on Two-Rooms with a perfect model,
the baselines, and the episode picture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from jepalab.envs import TwoRooms, TwoRoomsEnv
from jepalab.planning import (
    CEMConfig,
    EnergyPlanner,
    GreedyPolicy,
    MPPIConfig,
    OraclePlanner,
    PlanResult,
    RandomPolicy,
    cem,
    evaluate,
    mppi,
    mppi_weights,
    oracle_config,
    oracle_energy,
    run_episode,
    save_episode_gif,
    save_episode_picture,
    shift_warm_start,
)

TARGET = torch.tensor([[0.3, -0.5], [0.7, 0.1], [-0.2, 0.9]])  # (H=3, A=2), inside [-1, 1]
OPTIMIZERS = [
    pytest.param(cem, CEMConfig(horizon=3), 1e-2, id="cem"),
    pytest.param(mppi, MPPIConfig(horizon=3), 3e-2, id="mppi"),
]
# The door task: the straight line from start to goal runs into the wall at x = 32; the only
# way is up through the door (rows 6-14), a ~66 px detour.
DOOR_START, DOOR_GOAL = np.array([20.0, 40.0]), np.array([45.0, 40.0])
DOOR_REPEAT = 10  # 5 planned actions x 10 env steps: a 122 px horizon covers the detour


class RecordingEnergy:
    """``((a - target)^2).sum`` over (H, A), recording every call's candidates."""

    def __init__(self, target: torch.Tensor = TARGET) -> None:
        self.target = target
        self.calls: list[torch.Tensor] = []

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        self.calls.append(actions.clone())
        return ((actions - self.target) ** 2).sum((1, 2))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- optimisers ------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_finds_minimum_of_quadratic(optimizer, config, tol):
    energy = RecordingEnergy()
    result = optimizer(energy, config, action_dim=2, generator=_gen())
    assert isinstance(result, PlanResult)
    assert result.actions.shape == result.mean.shape == result.std.shape == (3, 2)
    assert torch.allclose(result.actions, TARGET, atol=tol)
    assert result.energy == pytest.approx(float(energy(result.actions[None])[0]), abs=1e-6)
    history = result.energies_per_iteration
    assert len(history) == config.iterations
    assert all(b <= a for a, b in zip(history, history[1:], strict=False))
    assert history[-1] < history[0]


@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_one_energy_call_per_iteration_with_all_samples(optimizer, config, tol):
    energy = RecordingEnergy()
    warm = torch.full((3, 2), 0.25)
    optimizer(energy, config, action_dim=2, init_mean=warm, generator=_gen())
    assert len(energy.calls) == config.iterations
    assert all(c.shape == (config.samples, 3, 2) for c in energy.calls)
    assert torch.equal(energy.calls[0][0], warm)  # the mean is always candidate 0


@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_warm_start_at_optimum_is_never_lost(optimizer, config, tol):
    # The current mean is among the candidates, so a perfect warm start survives exactly.
    result = optimizer(RecordingEnergy(), config, 2, init_mean=TARGET, generator=_gen())
    assert result.energy == 0.0
    assert torch.equal(result.actions, TARGET)


@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_box_bounds_are_respected(optimizer, config, tol):
    target = torch.tensor([[2.0, -3.0]]).expand(3, 2)  # outside the box
    config = dataclasses.replace(config, action_low=[-1.0, -0.5], action_high=[1.0, 0.5])
    energy = RecordingEnergy(target)
    result = optimizer(energy, config, 2, generator=_gen())
    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    for c in energy.calls:
        assert torch.all(c >= low) and torch.all(c <= high)
    assert torch.allclose(result.actions, torch.tensor([[1.0, -0.5]]).expand(3, 2), atol=tol)


@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_seeded_generator_is_deterministic(optimizer, config, tol):
    a = optimizer(RecordingEnergy(), config, 2, generator=_gen(3))
    b = optimizer(RecordingEnergy(), config, 2, generator=_gen(3))
    c = optimizer(RecordingEnergy(), config, 2, generator=_gen(4))
    assert torch.equal(a.actions, b.actions) and a.energy == b.energy
    assert not torch.equal(a.actions, c.actions)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("optimizer, config, tol", OPTIMIZERS)
def test_plans_on_the_generator_device(optimizer, config, tol):
    generator = torch.Generator("cuda").manual_seed(0)
    energy = RecordingEnergy(TARGET.cuda())
    result = optimizer(energy, config, 2, init_mean=torch.zeros(3, 2), generator=generator)
    assert result.actions.device.type == "cuda" and energy.calls[0].device.type == "cuda"
    assert torch.allclose(result.actions.cpu(), TARGET, atol=tol)


def test_cem_momentum_slows_the_mean():
    # One iteration from 0 towards TARGET: with momentum m the mean moves (1 - m) as far.
    fast = cem(RecordingEnergy(), CEMConfig(horizon=3, iterations=1), 2, generator=_gen())
    slow = cem(
        RecordingEnergy(), CEMConfig(horizon=3, iterations=1, momentum=0.5), 2, generator=_gen()
    )
    assert torch.allclose(slow.mean, 0.5 * fast.mean, atol=1e-6)


def test_mppi_weights_are_a_scale_free_softmax():
    e = torch.tensor([0.3, 0.1, 0.7, 0.2])
    w = mppi_weights(e, temperature=0.5)
    assert w.sum().item() == pytest.approx(1.0)
    assert torch.equal(torch.argsort(w, descending=True), torch.argsort(e))
    assert torch.allclose(mppi_weights(10 * e + 3, 0.5), w, atol=1e-6)
    assert not torch.allclose(mppi_weights(10 * e, 0.5, normalize=False), w)
    inf = mppi_weights(torch.tensor([0.2, float("inf"), 0.1]), 0.5)
    assert inf[1] == 0 and torch.isfinite(inf).all()


def test_energy_with_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="energy_fn"):
        cem(lambda a: a.sum(-1), CEMConfig(horizon=3), 2)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: CEMConfig(elites=400), "elites"),
        (lambda: CEMConfig(elites=0), "elites"),
        (lambda: CEMConfig(samples=1, elites=1), "samples"),
        (lambda: CEMConfig(horizon=0), "horizon"),
        (lambda: CEMConfig(iterations=0), "iterations"),
        (lambda: CEMConfig(momentum=1.0), "momentum"),
        (lambda: CEMConfig(init_std=0.0), "init_std"),
        (lambda: CEMConfig(action_low=1.0, action_high=-1.0), "action_low"),
        (lambda: CEMConfig(action_low=[-1, 0], action_high=[1, 0]), "action_low"),
        (lambda: CEMConfig(action_low=[-1, -1], action_high=[1, 1, 1]), "action_low"),
        (lambda: MPPIConfig(temperature=0.0), "temperature"),
        (lambda: MPPIConfig(noise_std=-1.0), "noise_std"),
        (lambda: MPPIConfig(min_std=-1.0), "min_std"),
        (lambda: cem(RecordingEnergy(), CEMConfig(action_low=[-1] * 3), 2), "action_low"),
        (lambda: cem(RecordingEnergy(), CEMConfig(), 2, init_mean=torch.zeros(3, 2)), "init_mean"),
        (lambda: oracle_energy(TwoRooms(), DOOR_START, DOOR_GOAL, energy="max"), "energy"),
        (
            lambda: oracle_energy(TwoRooms(), DOOR_START, DOOR_GOAL, action_repeat=0),
            "action_repeat",
        ),
        (lambda: run_episode(TwoRoomsEnv(), GreedyPolicy(), execute=0), "execute"),
        (
            lambda: run_episode(TwoRoomsEnv(), OraclePlanner(TwoRooms(), action_repeat=5)),
            "action_repeat",
        ),
        (lambda: shift_warm_start(torch.zeros(3, 2), 1, "first"), "warm_start"),
    ],
)
def test_bad_arguments_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


# -- oracle energy and the MPC loop -----------------------------------------------------------
def test_oracle_energy_rolls_out_the_true_dynamics():
    world = TwoRooms()
    energy = oracle_energy(world, DOOR_START, DOOR_GOAL, action_repeat=5)
    still = torch.zeros(1, 3, 2)
    assert energy(still).item() == pytest.approx(np.abs(DOOR_GOAL - DOOR_START).sum())
    # Straight right at full speed for 30 env steps: stopped by the wall, 14.5 px short in x.
    right = torch.tensor([[5 * world.config.max_speed, 0.0]]).expand(1, 6, 2)
    assert energy(right).item() == pytest.approx(DOOR_GOAL[0] - world.config.wall_left, abs=1e-3)
    # All candidates at once equals one at a time.
    batch = torch.randn(8, 3, 2, generator=_gen()) * 10
    for kind in ("final", "sum", "min"):
        fn = oracle_energy(world, DOOR_START, DOOR_GOAL, 5, energy=kind, norm="l2")
        together = fn(batch)
        assert together.shape == (8,)
        assert torch.allclose(together, torch.cat([fn(b[None]) for b in batch]))


def test_shift_warm_start():
    plan = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(shift_warm_start(plan, 1), torch.tensor([[2, 3], [4, 5], [6, 7], [6, 7.0]]))
    assert torch.equal(
        shift_warm_start(plan, 3, "zeros"), torch.tensor([[6, 7.0], [0, 0], [0, 0], [0, 0]])
    )
    assert torch.equal(shift_warm_start(plan, 9), torch.tensor([[6, 7.0]]).expand(4, 2))
    assert shift_warm_start(plan, 1, "none") is None


class ScriptedPlanner:
    """Always plans the same actions; records what it was given."""

    def __init__(self, actions: torch.Tensor) -> None:
        self.actions = actions
        self.warm_starts: list[torch.Tensor | None] = []

    def __call__(self, observation, goal_observation, warm_start):
        assert observation.shape == goal_observation.shape == (64, 64)
        assert observation.dtype == np.uint8
        self.warm_starts.append(warm_start)
        return PlanResult(self.actions, 0.0, self.actions, torch.zeros_like(self.actions))


def test_loop_executes_first_actions_with_action_repeat():
    plan = torch.tensor([[4.0, 2.0], [0.0, -4.0], [-4.0, 0.0]])
    planner = ScriptedPlanner(plan)
    start, goal = np.array([10.0, 40.0]), np.array([58.0, 58.0])
    result = run_episode(
        TwoRoomsEnv(), planner, execute=2, action_repeat=4, max_steps=20, start=start, goal=goal
    )
    assert result.steps == 20 and result.positions.shape == (21, 2)
    # Replans every execute * action_repeat = 8 steps: at steps 0, 8, 16.
    assert len(result.plans) == len(result.plan_seconds) == 3
    steps = np.diff(result.positions, axis=0)
    np.testing.assert_allclose(steps[:4], np.tile([1.0, 0.5], (4, 1)))  # a / action_repeat
    np.testing.assert_allclose(steps[4:8], np.tile([0.0, -1.0], (4, 1)))
    np.testing.assert_allclose(steps[8:12], steps[:4])  # replanned: the first action again
    np.testing.assert_allclose(result.plans[1][0], result.positions[8])
    assert planner.warm_starts[0] is None
    assert torch.equal(planner.warm_starts[1], torch.stack([plan[2], plan[2], plan[2]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_planner_goes_through_the_door(seed):
    world = TwoRooms()
    # Default CEM (300 samples, 10 iterations): 12/12 seeds succeed in 38-68 steps; with
    # 200 x 6 one in twelve gets stuck in the corner by the wall.
    planner = OraclePlanner(world, oracle_config(world, DOOR_REPEAT), action_repeat=DOOR_REPEAT)
    result = run_episode(
        TwoRoomsEnv(),
        planner,
        action_repeat=DOOR_REPEAT,
        seed=seed,
        start=DOOR_START,
        goal=DOOR_GOAL,
    )
    assert result.success and result.final_distance < world.config.success_radius
    assert result.steps < 100  # the shortest detour is ~27 steps
    assert world.is_free(result.positions).all()
    lengths = np.linalg.norm(np.diff(result.positions, axis=0), axis=-1)
    assert lengths.max() <= world.config.max_speed + 1e-9
    in_wall_column = np.abs(result.positions[:, 0] - world.config.wall_x) < 1.5
    assert np.all(result.positions[in_wall_column, 1] < 15)  # crossed at the door, rows 6-14


def test_oracle_mppi_goes_through_the_door():
    world = TwoRooms()
    config = oracle_config(world, DOOR_REPEAT, "mppi")
    planner = OraclePlanner(world, config, action_repeat=DOOR_REPEAT)
    result = run_episode(
        TwoRoomsEnv(), planner, action_repeat=DOOR_REPEAT, seed=0, start=DOOR_START, goal=DOOR_GOAL
    )
    assert result.success


def test_greedy_policy_is_stopped_by_the_wall():
    world = TwoRooms()
    result = run_episode(
        TwoRoomsEnv(), GreedyPolicy(), action_repeat=DOOR_REPEAT, start=DOOR_START, goal=DOOR_GOAL
    )
    assert not result.success and result.steps == world.config.max_steps
    assert result.positions[-1, 0] == pytest.approx(world.config.wall_left, abs=1e-3)
    assert result.final_distance == pytest.approx(DOOR_GOAL[0] - world.config.wall_left, abs=1e-3)


def test_greedy_policy_succeeds_in_one_room():
    result = run_episode(
        TwoRoomsEnv(), GreedyPolicy(), start=np.array([10.0, 50.0]), goal=np.array([25.0, 20.0])
    )
    assert result.success and result.steps <= 15  # 33.5 px at 2.45 px / step, minus the radius


def test_image_only_planner_in_the_loop():
    # A non-privileged planner: it finds the agent and the goal in the images (the brightest
    # pixel), then plans with the true dynamics -- the shape a world-model planner has.
    world = TwoRooms()

    def locate(image: np.ndarray) -> np.ndarray:
        y, x = np.unravel_index(np.argmax(image), image.shape)
        return np.array([x, y], dtype=np.float64)

    def make_energy(observation, goal_observation):
        return oracle_energy(world, locate(observation), locate(goal_observation), 5, "min")

    planner = EnergyPlanner(make_energy, oracle_config(world, 5, samples=100, iterations=4))
    result = run_episode(
        TwoRoomsEnv(),
        planner,
        action_repeat=5,
        seed=0,
        start=np.array([40.0, 50.0]),
        goal=np.array([52.0, 12.0]),
    )
    assert result.success


def test_evaluate_is_seeded_per_episode():
    env = TwoRoomsEnv()
    policy = RandomPolicy(max_speed=2.45)
    a = evaluate(env, policy, episodes=3, seed=7, max_steps=20)
    b = evaluate(TwoRoomsEnv, policy, episodes=3, seed=7, max_steps=20)
    for i, (ra, rb) in enumerate(zip(a["episodes"], b["episodes"], strict=True)):
        np.testing.assert_array_equal(ra.positions, rb.positions)
        env.reset(seed=7 + i)
        np.testing.assert_array_equal(ra.start, env.position)
    assert a["success_rate"] == b["success_rate"] and a["mean_steps"] == 20
    assert a["plan_seconds_per_env_step"] <= a["plan_seconds_per_replan"]
    assert 0.0 <= a["success_rate"] <= 1.0


# -- pictures ---------------------------------------------------------------------------------
def test_episode_picture_and_gif(tmp_path):
    world = TwoRooms()
    planner = OraclePlanner(
        world, oracle_config(world, 5, samples=50, iterations=2), action_repeat=5
    )
    result = run_episode(TwoRoomsEnv(), planner, action_repeat=5, seed=0, max_steps=15)
    path = save_episode_picture(tmp_path / "ep.png", world, result, scale=4)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (256, 256)
        pixels = np.asarray(image).reshape(-1, 3).astype(int)
    blue = (pixels[:, 2] > 200) & (pixels[:, 0] < 100)
    red = (pixels[:, 0] > 200) & (pixels[:, 1] < 100)
    assert blue.any() and red.any()
    gif = save_episode_gif(tmp_path / "ep.gif", world, result, scale=2, every=5)
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 4  # steps 0, 5, 10, 15


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_jepalab_plan_builds_every_registered_planner(name):
    """`jepalab plan planner=NAME`: each registered optimiser gets its own options from the
    command's settings (MPPI's starting noise is init_std; it once received init_std as a
    keyword it does not take)."""
    from jepalab.cli.plan import PlanSettings, build_planner
    from jepalab.planning import PLANNERS

    assert set(PLANNERS) == {"cem", "mppi"}

    class Model:
        device = torch.device("cpu")

        def make_energy(self, observation, goal):
            return lambda actions: actions.square().sum(dim=(1, 2))

    settings = PlanSettings(ckpt="x", planner=name, samples=32, iterations=3, elites=4)
    planner = build_planner(settings, Model(), bound=2.0, action_dim=3)
    config = planner.config
    assert type(config).__name__ == {"cem": "CEMConfig", "mppi": "MPPIConfig"}[name]
    assert (config.samples, config.iterations, config.horizon) == (32, 3, 5)
    assert (config.init_std if name == "cem" else config.noise_std) == 1.0  # bound / 2
    plan = planner(np.zeros((8, 8)), np.zeros((8, 8)), None)
    assert plan.actions.shape == (5, 3) and float(plan.actions.abs().max()) <= 2.0
