"""The Two-Rooms world-model pipeline from the command line: collect -> I-JEPA encoder ->
action-conditioned predictor on the frozen encoder -> planning evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from jepalab.cli import main
from jepalab.experiment import load_pretrained_encoder
from jepalab.plan import load_action_model

from .conftest import TINY_OVERRIDES


def test_collect_pretrain_train_ac_and_plan_from_the_cli(tmp_path, capsys):
    data = tmp_path / "two_rooms"
    assert main(["collect", "--out", str(data), "--episodes", "30", "--length", "12",
                 "--no-progress"]) == 0
    encoder_run = tmp_path / "encoder"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    assert main([
        "train", "experiment=two_rooms_ijepa", *tiny, "data.batch_size=32",
        "trainer.max_steps=2", f"data.params.root={data}", f"run_dir={encoder_run}",
        "eval.probe=none",
    ]) == 0
    ac_run = tmp_path / "ac"
    assert main([
        "train", "experiment=two_rooms_ac", *tiny, "data.batch_size=8", "trainer.max_steps=2",
        "predictor.embed_dim=16", "data.params.frame_skip=2", f"data.params.root={data}",
        f"run_dir={ac_run}",
        f"method.encoder_checkpoint={encoder_run}",
    ]) == 0
    # the AC run's stored config describes the pretrained encoder it used ...
    stored = json.loads((ac_run / "config.json").read_text())
    assert stored["encoder"]["embed_dim"] == 32 and stored["encoder"]["patch_size"] == 16
    # ... and its checkpoint carries that encoder's weights, frozen
    method, _ = load_action_model(ac_run)
    pretrained, _ = load_pretrained_encoder(encoder_run)
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(method.encoder.state_dict()[key], value, rtol=0, atol=0)

    capsys.readouterr()
    assert main([
        "plan", str(ac_run), "--episodes", "2", "--samples", "16", "--elites", "4",
        "--iterations", "2", "--horizon", "2", "--max-steps", "6", "--baselines",
    ]) == 0
    printed = capsys.readouterr().out
    assert "success" in printed and "random policy" in printed
    summary = json.loads((ac_run / "plan.json").read_text())
    assert set(summary["results"]) == {
        "CEM on the world model", "random policy", "greedy (privileged positions)"
    }
    for row in summary["results"].values():
        assert 0.0 <= row["success_rate"] <= 1.0 and row["mean_steps"] <= 6
    assert summary["settings"]["action_repeat"] == 2  # the data's frame_skip
    assert (ac_run / "plan_episode.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_rejects_a_checkpoint_that_is_not_action_conditioned(tiny_cfg, tmp_path):
    from jepalab.experiment import train

    tiny_cfg.trainer.max_steps = 1
    tiny_cfg.eval.probe = "none"
    train(tiny_cfg)
    with pytest.raises(ValueError, match="not an action-conditioned checkpoint"):
        load_action_model(tiny_cfg.run_dir)
