"""stable-worldmodel's environments through jepalab: the Gymnasium adapter is a planning
environment, `jepalab collect --env` writes trajectories that put the real environment back
in every recorded state, and bad input ends in one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from jepalab.data.trajectories import read_episode, read_meta
from jepalab.envs import PlanningEnv
from jepalab.envs.gym_collect import collect_gymnasium
from jepalab.envs.gymnasium import EnvError, GymnasiumEnv
from jepalab.errors import DataError
from jepalab.planning.base import PlanResult
from jepalab.planning.mpc import run_episode
from jepalab.planning.protocol import (
    RandomActions,
    ReplayActions,
    ZeroActions,
    dataset_tasks,
    protocol_tasks,
    run_protocol,
    wilson_interval,
)

TWO_ROOM, PUSH_T = "swm/TwoRoom-v1", "swm/PushT-v1"


@pytest.fixture(scope="module")
def tworoom_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("swm") / "tworoom"
    collect_gymnasium(root, TWO_ROOM, "expert", num_episodes=3, episode_length=40, progress=False)
    return root


def test_the_adapter_is_a_planning_env_that_sets_states_and_goals():
    env = GymnasiumEnv(TWO_ROOM, image_size=32)
    assert isinstance(env, PlanningEnv) and env.max_steps == 50
    start, goal = np.array([60.0, 150.0]), np.array([170.0, 60.0])
    frame, info = env.reset(seed=0, options={"start": start, "goal": goal})
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(info["state"], start)
    np.testing.assert_array_equal(info["goal_state"], goal)
    assert info["distance"] == pytest.approx(np.linalg.norm(goal - start)) and not info["success"]
    assert env.unwrapped.target_position.tolist() == goal.tolist()  # their success test's goal
    # the goal frame is the environment rendered in the goal state
    frame_at_goal, info = env.reset(seed=0, options={"start": goal, "goal": goal})
    np.testing.assert_array_equal(env.render_goal(), frame_at_goal)
    assert info["success"]
    assert not np.array_equal(env.render_goal(), frame)


class _StraightToGoal:
    """Privileged: one action toward the goal state, as the loop's baselines are."""

    privileged = True

    def __call__(self, observation, goal_observation, warm_start, *, info):
        import torch

        direction = np.asarray(info["goal_state"]) - np.asarray(info["state"])
        action = np.clip(direction / 10.0, -1, 1)
        actions = torch.as_tensor(action, dtype=torch.float32).reshape(1, -1)
        return PlanResult(actions, float("nan"), actions, torch.zeros_like(actions))


def test_the_planning_loop_runs_in_stable_worldmodels_tworoom():
    env = GymnasiumEnv(TWO_ROOM)
    start, goal = np.array([40.0, 40.0]), np.array([80.0, 90.0])  # the same room
    result = run_episode(env, _StraightToGoal(), start=start, goal=goal, max_steps=50)
    assert result.success and result.final_distance < 16.0  # their terminated: < 16 px
    assert result.states.shape == (result.steps + 1, 2)
    np.testing.assert_array_equal(result.start, start)


def test_collected_episodes_restore_the_environment_exactly(tworoom_data):
    """The dataset holds what the swm protocol needs: from any recorded state, the recorded
    actions lead the real environment through the recorded states (open-loop replay)."""
    meta = read_meta(tworoom_data)
    assert meta["source"]["env"] == TWO_ROOM and meta["source"]["policy"] == "expert"
    assert meta["num_episodes"] == 3
    ep = read_episode(tworoom_data, 1)
    assert ep.frames.shape == (40, 64, 64, 3) and ep.states.shape == (40, 2)
    assert ep.actions.shape == (39, 2) and np.abs(ep.actions).max() <= 1.0
    env = GymnasiumEnv(TWO_ROOM)
    _, info = env.reset(seed=7, options={"start": ep.states[5], "goal": ep.states[30]})
    np.testing.assert_array_equal(env.render(), ep.frames[5])
    for t in range(5, 30):
        _, _, _, _, info = env.step(ep.actions[t])
        np.testing.assert_allclose(info["state"], ep.states[t + 1], atol=1e-4)
    assert info["success"]
    np.testing.assert_array_equal(env.render_goal(), ep.frames[30])


def test_push_t_weak_policy_and_replay():
    """Push-T's state is 7-D (agent, block pose, agent velocity); stable-worldmodel's own
    WeakPolicy collects; replayed actions reach the recorded goal within its success test
    (the physics re-steps on set_state, so states agree to ~2 of its 512 px)."""
    env = GymnasiumEnv(PUSH_T)
    from jepalab.envs.gym_collect import make_policy, rollout

    ep = rollout(env, make_policy("weak", env, seed=3), length=30, seed=3)
    assert ep.states.shape == (30, 7) and ep.goal_state.shape == (7,)
    block_moves = np.abs(np.diff(ep.states[:, 2:5], axis=0)).sum()
    agent_moves = np.abs(np.diff(ep.states[:, :2], axis=0)).sum()
    assert agent_moves > 10 and np.isfinite(block_moves)
    _, info = env.reset(seed=0, options={"start": ep.states[2], "goal": ep.states[27]})
    for a in ep.actions[2:27]:
        _, _, _, _, info = env.step(a)
    assert np.abs(info["state"][:4] - ep.states[27][:4]).max() < 5.0
    assert info["success"]


def test_the_expert_collects_with_the_noise_of_their_tworoom_data():
    """`policy=expert` is their ExpertPolicy with the settings of their tworoom collection
    script (`scripts/data/collect_tworooms.py`, 0.1.1: action_noise=2.0,
    action_repeat_prob=0.05), not the noiseless expert: on noiseless data the agent reaches
    the target and idles, and 33 of the protocol's 50 tasks are solved by doing nothing."""
    from stable_worldmodel.envs.two_room import ExpertPolicy

    from jepalab.envs.gym_collect import make_policy, rollout

    def theirs(**settings):
        env = GymnasiumEnv(TWO_ROOM)
        policy = ExpertPolicy(seed=5, **settings)
        policy.set_env(env.env)
        act = lambda info: np.asarray(policy.get_action(info), dtype=np.float32).reshape(2)  # noqa: E731
        return rollout(env, act, length=40, seed=5).actions

    env = GymnasiumEnv(TWO_ROOM)
    ours = rollout(env, make_policy("expert", env, seed=5), length=40, seed=5).actions
    np.testing.assert_array_equal(ours, theirs(action_noise=2.0, action_repeat_prob=0.05))
    assert not np.allclose(ours, theirs())  # the noiseless expert


def test_bad_input_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(EnvError, match="unknown environment 'swm/Nope-v1'.*registered: swm/"):
        GymnasiumEnv("swm/Nope-v1")
    with pytest.raises(EnvError, match="Discrete action space"):
        GymnasiumEnv("CartPole-v1")
    with pytest.raises(EnvError, match="ExpertPolicy, for swm/TwoRoom-\\* only"):
        collect_gymnasium(tmp_path / "x", PUSH_T, "expert", num_episodes=1, progress=False)
    with pytest.raises(EnvError, match="not one of"):
        collect_gymnasium(tmp_path / "x", TWO_ROOM, "clever", num_episodes=1, progress=False)
    with pytest.raises(EnvError, match="length=1 >= 2"):
        collect_gymnasium(tmp_path / "x", TWO_ROOM, episode_length=1, progress=False)
    real = importlib.import_module

    def without_swm(name, *args):
        if name == "stable_worldmodel":
            raise ModuleNotFoundError("No module named 'stable_worldmodel'", name=name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_swm)
    with pytest.raises(
        EnvError, match=r"stable_worldmodel is not installed; pip install 'jepalab\[envs\]'"
    ):
        GymnasiumEnv(TWO_ROOM)


def test_the_cli_collects_and_errors_in_one_line(tmp_path):
    out = tmp_path / "pusht"
    cmd = [sys.executable, "-m", "jepalab.cli", "collect", f"env={PUSH_T}", "policy=weak"]
    done = subprocess.run(
        [*cmd, "episodes=2", "length=12", "size=48", f"out={out}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 episodes, 24 frames" in done.stdout
    assert read_episode(out, 0).frames.shape == (12, 48, 48, 3)
    bad = subprocess.run(
        [*cmd[:4], "env=swm/Nope-v1", f"out={tmp_path / 'n'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown environment" in bad.stderr


# -- stable-worldmodel's dataset-mode protocol (jepalab.planning.protocol) ---------------------


def _their_selection(lengths, num_eval, goal_offset, seed):
    """scripts/plan/eval_wm.py's start-row draw, written out over per-row columns."""
    episode_idx = np.concatenate([[e] * n for e, n in enumerate(lengths)])
    step_idx = np.concatenate([np.arange(n) for n in lengths])
    max_start = {e: n - goal_offset - 1 for e, n in enumerate(lengths)}
    valid_mask = step_idx <= np.array([max_start[e] for e in episode_idx])
    valid_indices = np.nonzero(valid_mask)[0]
    g = np.random.default_rng(seed)
    picked = np.sort(valid_indices[g.choice(len(valid_indices) - 1, size=num_eval, replace=False)])
    return list(zip(episode_idx[picked].tolist(), step_idx[picked].tolist(), strict=True))


def test_start_rows_are_drawn_as_their_script_draws_them():
    lengths = [100, 40, 27, 25, 80, 60]  # 25 frames: no start row (needs offset + 1)
    tasks = protocol_tasks(lengths, num_eval=50, goal_offset=25, seed=42)
    assert [(t.episode, t.start) for t in tasks] == _their_selection(lengths, 50, 25, 42)
    assert all(t.goal == t.start + 25 and t.goal < lengths[t.episode] for t in tasks)
    assert 3 not in {t.episode for t in tasks}
    with pytest.raises(
        DataError, match=r"9 drawable start rows for 50 episodes.*at least 26 frames"
    ):
        protocol_tasks([30, 30], num_eval=50, where="data/x")


def test_replay_reaches_every_goal_and_the_baselines_do_not(tworoom_data):
    """The open-loop replay of the dataset's actions proves the restore: it must succeed on
    (nearly) every task; doing nothing or acting at random must not."""
    tasks = dataset_tasks(tworoom_data, num_eval=12, goal_offset=25)
    env = GymnasiumEnv(TWO_ROOM)
    replay = run_protocol(env, tworoom_data, ReplayActions(tworoom_data), tasks)
    assert replay.success_rate >= 0.95
    assert all(e.success_step is not None and e.success_step <= 25 for e in replay.episodes)
    zero = run_protocol(env, tworoom_data, ZeroActions(), tasks)
    rand = run_protocol(env, tworoom_data, RandomActions(), tasks, budget=50)
    assert zero.success_rate < replay.success_rate and rand.success_rate < replay.success_rate
    assert zero.mean_final_distance > replay.mean_final_distance
    lo, hi = replay.interval
    assert lo <= replay.success_rate <= hi and hi <= 1.0
    record = replay.to_json()["episodes"][0]
    assert set(record) >= {"task", "seed", "success", "steps", "final_distance", "actions"}


def test_the_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-4)  # 50/50: [92.9%, 100%]
    lo, hi = wilson_interval(45, 50)
    assert (lo, hi) == pytest.approx((0.7864, 0.9565), abs=1e-4)


# -- our world model inside stable-worldmodel's own evaluation (jepalab.interop.swm) -----------


@pytest.fixture(scope="module")
def rgb_world_model():
    import torch

    from jepalab.config import compose_config
    from jepalab.methods.build import build_action_model
    from jepalab.planning.world_model import LatentWorldModel

    from .conftest import TINY_OVERRIDES

    torch.manual_seed(0)
    cfg = compose_config([*TINY_OVERRIDES, "data.channels=3"], experiment="two_rooms_wm")
    method = build_action_model(cfg, action_dim=2, state_dim=0, load_encoder=False)
    return LatentWorldModel(method, energy="final")


def test_get_cost_is_our_planning_energy(rgb_world_model):
    import torch

    from jepalab.interop.swm import SWMCostModel

    env = GymnasiumEnv(TWO_ROOM)
    frame, _ = env.reset(seed=0)
    goal = env.render_goal()
    model = SWMCostModel(rgb_world_model)
    samples, horizon, block = 6, 3, 5
    candidates = torch.rand(1, samples, horizon, 2 * block) * 2 - 1
    info = {
        "pixels": torch.from_numpy(frame.copy())[None, None, None].expand(1, samples, 1, 64, 64, 3),
        "goal": torch.from_numpy(goal.copy())[None, None, None].expand(1, samples, 1, 64, 64, 3),
    }
    costs = model.get_cost(info, candidates)
    expected = rgb_world_model.make_energy(frame, goal)(candidates[0].reshape(samples, -1, 2))
    assert costs.shape == (1, samples) and costs.dtype == torch.float32
    torch.testing.assert_close(costs[0], expected.float())
    chw = {k: v.movedim(-1, -3).float() / 255 for k, v in info.items()}  # after a transform
    torch.testing.assert_close(model.get_cost(chw, candidates), costs, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="no 'goal' image.*dataset-mode"):
        model.get_cost({"pixels": info["pixels"]}, candidates)


@pytest.mark.filterwarnings("ignore")
def test_their_world_evaluates_our_model_with_their_cem_and_mppi(rgb_world_model, tmp_path):
    """Two episodes of stable-worldmodel's own dataset-mode evaluation (World.evaluate with
    their CEM and MPPI solvers and WorldModelPolicy) on a dataset their World collected."""
    import stable_worldmodel as swm
    from stable_worldmodel.envs.two_room import ExpertPolicy
    from stable_worldmodel.policy import PlanConfig, WorldModelPolicy
    from stable_worldmodel.solver import CEMSolver, MPPISolver

    from jepalab.interop.swm import SWMCostModel

    collector = swm.World(TWO_ROOM, num_envs=1, image_shape=(64, 64), max_episode_steps=30)
    collector.set_policy(ExpertPolicy(seed=0))
    collector.collect(
        str(tmp_path / "tr.lance"), episodes=2, seed=0, format="lance", progress=False
    )
    collector.close()
    dataset = swm.data.LanceDataset(path=str(tmp_path / "tr.lance"))
    callables = [
        {"method": "_set_state", "args": {"state": {"value": "state"}}},
        {"method": "_set_goal_state", "args": {"goal_state": {"value": "goal_state"}}},
    ]
    for solver_cls in (CEMSolver, MPPISolver):
        model = SWMCostModel(rgb_world_model)
        solver = solver_cls(model=model, num_samples=8, n_steps=2, topk=2, batch_size=2)
        config = PlanConfig(horizon=2, receding_horizon=1, action_block=5)
        world = swm.World(TWO_ROOM, num_envs=2, image_shape=(64, 64), max_episode_steps=40)
        world.set_policy(WorldModelPolicy(solver=solver, config=config))
        result = world.evaluate(
            dataset=dataset,
            episodes_idx=[0, 1],
            start_steps=[0, 2],
            goal_offset=10,
            eval_budget=10,
            callables=callables,
        )
        world.close()
        assert 0.0 <= result["success_rate"] <= 100.0 and len(result["episode_successes"]) == 2
        assert model.calls >= 2  # their solver planned with our energy


def test_a_trainer_run_becomes_a_cost_model(tiny_action_cfg):
    """``SWMCostModel.from_run``: the checkpoint the Trainer wrote, with the run's data
    normalisation and image size."""
    import torch

    from jepalab.config import to_plain
    from jepalab.interop import SWMCostModel
    from jepalab.methods.build import build_experiment
    from jepalab.train.setup import build_trainer

    tiny_action_cfg.trainer.max_steps = 1
    exp = build_experiment(tiny_action_cfg)
    trainer = build_trainer(tiny_action_cfg, exp, to_plain(tiny_action_cfg))
    trainer.fit()
    model = SWMCostModel.from_run(tiny_action_cfg.run_dir)
    assert model.image_size == tiny_action_cfg.encoder.img_size
    params = tiny_action_cfg.data.params
    torch.testing.assert_close(model.world_model.mean.flatten(), torch.tensor([params.mean]))
    for name, value in model.world_model.method.state_dict().items():
        assert torch.equal(value, trainer.method.state_dict()[name]), name


@pytest.mark.parametrize(
    ("experiment", "env_id", "policy"),
    [("swm_tworoom_wm", TWO_ROOM, "expert"), ("swm_pusht_wm", PUSH_T, "weak")],
)
def test_the_recipes_train_on_collected_data_and_plan_through_get_cost(
    experiment, env_id, policy, tmp_path
):
    """`jepalab collect --env` -> the recipe (2 steps, tiny) -> the run as their cost model:
    a model step is a block of 5 actions (10-D), one candidate block per model step."""
    import torch

    from jepalab.cli.train import train
    from jepalab.config import compose_config
    from jepalab.interop import SWMCostModel

    from .conftest import TINY_OVERRIDES

    data = tmp_path / "data"
    collect_gymnasium(data, env_id, policy, num_episodes=2, episode_length=30, progress=False)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    cfg = compose_config(
        [*overrides, f"data.params.root={data}", f"run_dir={tmp_path / 'run'}",
         "data.batch_size=4", "trainer.max_steps=2", "method.auto_steps=2"],
        experiment=experiment,
    )  # fmt: skip
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])
    model = SWMCostModel.from_run(str(tmp_path / "run"))
    assert model.model_action_dim == 10
    frame = read_episode(data, 0).frames
    info = {
        "pixels": torch.from_numpy(frame[0].copy())[None, None, None].expand(1, 3, 1, 64, 64, 3),
        "goal": torch.from_numpy(frame[-1].copy())[None, None, None].expand(1, 3, 1, 64, 64, 3),
    }
    costs = model.get_cost(info, torch.rand(1, 3, 2, 10) * 2 - 1)
    assert costs.shape == (1, 3) and torch.isfinite(costs).all()


def test_jepalab_plan_runs_their_protocol_with_a_trained_run(tmp_path, capsys):
    """`jepalab plan ckpt=RUN env=swm/TwoRoom-v1`: the run's planner and the baselines on the
    protocol's tasks; replay reaches every goal; plan.json keeps every episode."""
    import json

    from jepalab.cli.plan import main
    from jepalab.cli.train import train
    from jepalab.config import compose_config

    from .conftest import TINY_OVERRIDES

    data = tmp_path / "data"
    collect_gymnasium(data, TWO_ROOM, "expert", num_episodes=2, episode_length=34, progress=False)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    run = tmp_path / "run"
    cfg = compose_config(
        [*overrides, f"data.params.root={data}", f"run_dir={run}", "data.batch_size=4",
         "trainer.max_steps=2", "method.auto_steps=2", "eval.probe=none"],
        experiment="swm_tworoom_wm",
    )  # fmt: skip
    train(cfg)
    args = [f"ckpt={run}", f"env={TWO_ROOM}", "episodes=4", "samples=8", "elites=2"]
    assert main([*args, "iterations=2", "horizon=2", "receding=1", "baselines=true"]) == 0
    printed = capsys.readouterr().out
    assert "stable-worldmodel's protocol: 4 episodes, goal 25 steps ahead" in printed
    summary = json.loads((run / "plan.json").read_text())
    assert summary["complete"] and summary["action_block"] == 5
    results = summary["results"]
    assert len(results) == 4 and results["replay of the dataset's actions"]["success_rate"] == 1.0
    planned = results["CEM on the world model"]
    assert len(planned["episodes"]) == 4 and planned["seconds_per_solve"] > 0
    first = planned["episodes"][0]
    assert first["task"]["goal"] == first["task"]["start"] + 25 and first["actions"]
    with pytest.raises(ValueError, match="was collected in 'swm/TwoRoom-v1', not env=swm/PushT"):
        main([f"ckpt={run}", f"env={PUSH_T}", f"data={data}"])
