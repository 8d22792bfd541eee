"""Collapse monitors: the statistics on sets whose answer is known, and their use in training."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from jepalab.methods.base import MonitorInputs
from jepalab.methods.build import build_experiment
from jepalab.train.collapse import (
    CollapseMonitor,
    collapse_metrics,
    feature_std,
    mean_pairwise_cosine,
    prediction_errors,
    rankme,
)
from jepalab.train.setup import build_trainer


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_rankme_of_an_isotropic_gaussian_is_about_its_dimension():
    assert rankme(gaussian(8192, 64)) == pytest.approx(64, rel=0.02)
    # bounded by the number of samples when there are fewer samples than dimensions
    assert rankme(gaussian(16, 64)) <= 16 + 1e-6
    assert rankme(gaussian(16, 64)) > 12


def test_rankme_of_low_rank_sets():
    x = gaussian(1000, 1) @ gaussian(1, 64, seed=1)  # rank 1, every row on one line
    assert rankme(x) == pytest.approx(1.0, abs=0.01)
    # an isotropic Gaussian inside a 5-D subspace of 64-D: effective rank 5
    q, _ = torch.linalg.qr(gaussian(64, 5, seed=2))
    assert rankme(gaussian(8192, 5, seed=3) @ q.T * 3.0) == pytest.approx(5.0, rel=0.01)
    # the rank of the covariance: a shared offset is not a dimension ...
    offset = 100.0 * gaussian(1, 64, seed=4)
    assert rankme(gaussian(8192, 64) + offset) == pytest.approx(64, rel=0.02)
    # ... while the paper's uncentred statistic is dominated by it
    assert rankme(gaussian(8192, 64) + offset, center=False) < 2
    assert rankme(torch.ones(10, 8)) == 1.0


def test_rankme_rejects_token_grids():
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        rankme(torch.zeros(2, 3, 4))


def test_feature_std_and_cosine_separate_spread_from_collapse():
    spread = gaussian(4096, 32)
    collapsed = gaussian(1, 32).expand(100, 32) + 1e-6 * gaussian(100, 32, seed=3)
    assert feature_std(spread) == pytest.approx(1.0, abs=0.05)
    assert feature_std(collapsed) < 1e-3
    assert abs(mean_pairwise_cosine(spread)) < 0.01
    assert mean_pairwise_cosine(collapsed) == pytest.approx(1.0, abs=1e-6)
    # the closed form equals the explicit mean over pairs
    x = gaussian(7, 5, seed=4)
    z = torch.nn.functional.normalize(x, dim=-1)
    sims = z @ z.T
    explicit = (sims.sum() - sims.diagonal().sum()) / (7 * 6)
    assert mean_pairwise_cosine(x) == pytest.approx(float(explicit), abs=1e-6)
    assert math.isnan(mean_pairwise_cosine(x[:1]))


def test_prediction_errors_per_group_match_a_direct_computation():
    pred, target = gaussian(10, 4), gaussian(10, 4, seed=1)
    groups = torch.tensor([0, 1, 1, 0, 2, 2, 2, 0, 1, 0])
    errors = prediction_errors(pred, target, groups, ("short", "long", "third"))
    l1 = (pred - target).abs().mean(-1)
    for i, name in enumerate(("short", "long", "third")):
        assert errors[name] == pytest.approx(float(l1[groups == i].mean()), rel=1e-6)
    assert prediction_errors(pred, target, None, ())["all"] == pytest.approx(float(l1.mean()))
    # an empty group is left out rather than reported as 0 or NaN
    assert "third" not in prediction_errors(pred[:4], target[:4], groups[:4], ("a", "b", "third"))


def test_collapse_metrics_names_every_statistic():
    inputs = MonitorInputs(
        embeddings=gaussian(32, 16),
        tokens=gaussian(9000, 16).reshape(100, 90, 16),
        predictions=gaussian(20, 16),
        targets=gaussian(20, 16, seed=2),
        groups=torch.tensor([0, 1] * 10),
        group_names=("mask0", "mask1"),
    )
    m = collapse_metrics(inputs)
    assert set(m) == {
        "monitor/rankme",
        "monitor/rankme_max",
        "monitor/feature_std",
        "monitor/cosine",
        "monitor/rankme_tokens",
        "monitor/feature_std_tokens",
        "monitor/pred_error/mask0",
        "monitor/pred_error/mask1",
    }
    assert m["monitor/rankme_max"] == 16
    assert m["monitor/rankme_tokens"] == pytest.approx(16, rel=0.03)  # on <= 4096 tokens


def test_monitor_warns_once_per_fall_below_the_threshold(caplog):
    monitor = CollapseMonitor(rank_warning=0.2)
    healthy = MonitorInputs(embeddings=gaussian(64, 32))
    collapsed = MonitorInputs(embeddings=gaussian(64, 1) @ gaussian(1, 32, seed=1))
    with caplog.at_level(logging.WARNING, logger="jepalab.train.collapse"):
        assert monitor(healthy, 1)["monitor/rank_low"] == 0.0
        assert monitor(collapsed, 2)["monitor/rank_low"] == 1.0
        monitor(collapsed, 3)
        monitor(healthy, 4)
        monitor(collapsed, 5)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "step 2" in warnings[0] and "rank_warning" in warnings[0]
    with pytest.raises(ValueError, match="rank_warning"):
        CollapseMonitor(rank_warning=1.5)


def _metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_trainer_logs_monitors_for_every_method_without_changing_the_run(tiny_any_cfg, tmp_path):
    cfg = tiny_any_cfg
    cfg.trainer.max_steps = 6
    cfg.trainer.monitor_every = 3
    cfg.trainer.log_every = 2
    losses = build_trainer(cfg, build_experiment(cfg)).fit()
    rows = _metrics_rows(tmp_path / "run")
    # the first step, then every monitor_every-th, each in a row of its own step: merged into
    # the loss row at logging steps (6), alone otherwise (1, 3)
    assert [r["step"] for r in rows if "monitor/rankme" in r] == [1, 3, 6]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    row = next(r for r in rows if r["step"] == 3)
    assert 1.0 <= row["monitor/rankme"] <= row["monitor/rankme_max"]
    assert row["monitor/feature_std"] > 0.0
    assert -1.0 <= row["monitor/cosine"] <= 1.0
    errors = sorted(k for k in row if k.startswith("monitor/pred_error/"))
    expected = {
        "ijepa": ["monitor/pred_error/mask0"],
        "vjepa": ["monitor/pred_error/mask0", "monitor/pred_error/mask1"],
        "action": ["monitor/pred_error/rollout", "monitor/pred_error/teacher_forcing"],
    }
    kind = "action" if cfg.method.name == "action" else cfg.method.name
    assert errors == expected[kind]
    # monitoring draws no random numbers and changes nothing: same losses without it
    cfg.trainer.monitor_every = 0
    cfg.run_dir = str(tmp_path / "unmonitored")
    again = build_trainer(cfg, build_experiment(cfg)).fit()
    assert again == losses
    assert not any("monitor/rankme" in r for r in _metrics_rows(tmp_path / "unmonitored"))
