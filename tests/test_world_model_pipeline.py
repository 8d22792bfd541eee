"""The Two-Rooms world-model pipeline from the command line: collect -> I-JEPA encoder ->
action-conditioned predictor on the frozen encoder -> planning evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from jepalab.cli import main
from jepalab.models.pretrained import load_pretrained_encoder
from jepalab.runs import load_action_model

from .conftest import TINY_OVERRIDES


def test_collect_pretrain_train_ac_and_plan_from_the_cli(tmp_path, capsys):
    data = tmp_path / "two_rooms"
    assert main(["collect", f"out={data}", "episodes=30", "length=12", "progress=false"]) == 0
    encoder_run = tmp_path / "encoder"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    assert (
        main(
            [
                "train",
                "experiment=two_rooms_ijepa",
                *tiny,
                "data.batch_size=32",
                "trainer.max_steps=2",
                f"data.params.root={data}",
                f"run_dir={encoder_run}",
                "eval.probe=none",
            ]
        )
        == 0
    )
    ac_run = tmp_path / "ac"
    assert (
        main(
            [
                "train",
                "experiment=two_rooms_ac",
                *tiny,
                "data.batch_size=8",
                "trainer.max_steps=2",
                "predictor.embed_dim=16",
                "data.params.frame_skip=2",
                f"data.params.root={data}",
                f"run_dir={ac_run}",
                f"method.encoder_checkpoint={encoder_run}",
            ]
        )
        == 0
    )
    # the AC run's stored config describes the pretrained encoder it used ...
    stored = json.loads((ac_run / "config.json").read_text())
    assert stored["encoder"]["embed_dim"] == 32 and stored["encoder"]["patch_size"] == 16
    # ... and its checkpoint carries that encoder's weights, frozen
    method, _ = load_action_model(ac_run)
    pretrained, _ = load_pretrained_encoder(encoder_run)
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(method.encoder.state_dict()[key], value, rtol=0, atol=0)

    capsys.readouterr()
    assert (
        main(
            [
                "plan",
                f"ckpt={ac_run}",
                "episodes=2",
                "samples=16",
                "elites=4",
                "iterations=2",
                "horizon=2",
                "max_steps=6",
                "baselines=true",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "success" in printed and "random policy" in printed
    summary = json.loads((ac_run / "plan.json").read_text())
    assert set(summary["results"]) == {
        "CEM on the world model",
        "random policy",
        "greedy (privileged positions)",
    }
    for row in summary["results"].values():
        assert 0.0 <= row["success_rate"] <= 1.0 and row["mean_steps"] <= 6
        # every episode is recorded, and the summary is their mean
        episodes = row["per_episode"]
        assert [e["seed"] for e in episodes] == [1000, 1001]
        assert row["success_rate"] == sum(e["success"] for e in episodes) / 2
        assert row["mean_steps"] == sum(e["steps"] for e in episodes) / 2
    assert summary["settings"]["action_repeat"] == 2  # the data's frame_skip
    assert summary["settings"]["env_steps_per_planned_action"] == 2
    assert (ac_run / "plan_episode.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_rejects_a_checkpoint_that_is_not_action_conditioned(tiny_cfg, tmp_path):
    from jepalab.cli.train import train

    tiny_cfg.trainer.max_steps = 1
    tiny_cfg.eval.probe = "none"
    train(tiny_cfg)
    with pytest.raises(ValueError, match="not an action-conditioned checkpoint"):
        load_action_model(tiny_cfg.run_dir)


def test_end_to_end_world_model_trains_resumes_and_plans_from_the_cli(tmp_path, capsys):
    """experiment=two_rooms_wm: no pretrained encoder; one batch-standardised latent per frame;
    the plan output reports how the latent distance tracks the true distance."""
    data = tmp_path / "two_rooms"
    assert main(["collect", f"out={data}", "episodes=20", "length=12", "progress=false"]) == 0
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    run = tmp_path / "wm"
    args = [
        "train",
        "experiment=two_rooms_wm",
        *tiny,
        "data.batch_size=8",
        "data.params.frame_skip=2",
        f"data.params.root={data}",
        f"run_dir={run}",
    ]
    assert main([*args, "trainer.max_steps=2"]) == 0
    method, stored = load_action_model(run)
    assert stored["method"]["frame_pooling"] == "mean" and method.latent_norm is not None
    assert method.predictor.num_patches == 1
    # the batch statistics of training are in the checkpoint (planning uses them)
    assert int(method.latent_norm.num_batches_tracked) == 2
    assert main([*args, "trainer.max_steps=3"]) == 0  # resumes from step 2
    method, _ = load_action_model(run)
    assert int(method.latent_norm.num_batches_tracked) == 3
    # a run saved before a method key existed loads with that key's default
    state = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    for key in ("smoothness_weight", "inverse_dynamics_weight"):
        del state["config"]["method"][key]
    state["model"] = {
        k: v for k, v in state["model"].items() if not k.startswith("inverse_dynamics.")
    }
    torch.save(state, tmp_path / "older.pt")
    older, stored = load_action_model(tmp_path / "older.pt")
    assert "smoothness_weight" not in stored["method"] and older.inverse_dynamics is None
    assert older.smoothness_weight == 0.0
    capsys.readouterr()
    assert (
        main(
            [
                "plan",
                f"ckpt={run}",
                "episodes=1",
                "samples=16",
                "elites=4",
                "iterations=2",
                "horizon=2",
                "max_steps=4",
                "profile_pairs=40",
                "progress=false",
                "hold=2",
            ]
        )
        == 0
    )
    assert "latent distance vs true distance over 40 random position pairs" in (
        capsys.readouterr().out
    )
    summary = json.loads((run / "plan.json").read_text())
    # each planned action spans two model steps of frame_skip 2 env steps
    assert summary["settings"]["hold"] == 2
    assert summary["settings"]["env_steps_per_planned_action"] == 4
    profile = summary["latent_distance"]
    assert -1.0 <= profile["spearman"] <= 1.0 and profile["pairs"] == 40
    assert summary["landscape"] == str(run / "plan_landscape.png")
    assert (run / "plan_landscape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
