"""scripts/summarize.py: a multirun directory becomes a table of config differences × results."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jepalab.eval.seeds import format_seed_table, group_seeds, interval, ranking, t_quantile_975
from jepalab.eval.summary import (
    find_runs,
    flatten,
    format_csv,
    format_markdown,
    summarize,
    varying_keys,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "summarize.py"


def load_script():
    spec = importlib.util.spec_from_file_location("summarize_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(path: Path, config: dict, rows: list[dict], probe: dict | None = None) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if probe is not None:
        (path / "probe.json").write_text(json.dumps(probe))


def base_config(num_targets: int, lr: float) -> dict:
    return {
        "name": "sweep",
        "run_dir": None,
        "mask": {"num_targets": num_targets, "target_scale": [0.15, 0.2]},
        "optim": {"lr": lr, "betas": [0.9, 0.999]},
        "trainer": {"seed": 0},
    }


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "sweep"
    for job, (targets, acc) in enumerate([(1, 0.31), (2, 0.45), (4, 0.40)] + [(8, 0.2)] * 8):
        rows = [
            {"step": 10, "loss": 0.5, "monitor/rankme": 20.0},
            {"step": 20, "loss": 0.3 - 0.01 * job},  # monitors are logged less often
        ]
        probe = {
            "raw pixels": {"test_accuracy": 0.187},
            "trained encoder": {"test_accuracy": acc, "train_accuracy": 0.9},
        }
        write_run(root / str(job), base_config(targets, 5e-4), rows, probe)
    (root / "3" / "eval").mkdir()
    (root / "3" / "eval" / "surprise.json").write_text(
        json.dumps({"trained": {"overall": {"pairwise_accuracy": 0.8, "auroc": 0.7}}})
    )
    return root


def test_flatten_and_varying_keys():
    a, b = flatten(base_config(1, 1e-3)), flatten(base_config(2, 1e-3))
    assert a["mask.target_scale"] == [0.15, 0.2] and a["optim.lr"] == 1e-3
    assert varying_keys([a, b]) == ["mask.num_targets"]
    assert varying_keys([a, {**a, "extra": 1}]) == ["extra"]  # missing counts as different


def test_summary_keeps_what_the_sweep_varied_and_the_final_metrics(sweep):
    summary = summarize(sweep)
    assert [r.path.name for r in summary.runs] == [str(i) for i in range(11)]  # 10 after 9
    assert summary.config_columns == ["mask.num_targets"]  # run_dir/name/equal keys dropped
    rows = summary.rows()
    assert rows[1]["mask.num_targets"] == 2
    assert rows[1]["loss"] == pytest.approx(0.29)  # the last logged loss
    assert rows[1]["monitor/rankme"] == 20.0  # the last row that has it
    assert rows[1]["step"] == 20
    assert rows[1]["probe/trained encoder"] == 0.45
    assert "probe/raw pixels" not in rows[1]  # baselines only with --metrics
    assert rows[3]["surprise.trained.overall.pairwise_accuracy"] == 0.8
    assert rows[0]["surprise.trained.overall.pairwise_accuracy"] is None
    best = summarize(sweep, sort_by="probe/trained encoder", descending=True)
    assert [r.path.name for r in best.runs[:3]] == ["1", "2", "0"]
    with pytest.raises(ValueError, match="cannot sort by 'nope'"):
        summarize(sweep, sort_by="nope")
    everything = summarize(sweep, metrics=[".*"])
    assert "probe/raw pixels" in everything.metric_columns


def test_tables(sweep):
    summary = summarize(sweep)
    md = format_markdown(summary).splitlines()
    assert md[0].startswith("| run | mask.num_targets | step | loss |")
    assert len(md) == 2 + 11
    assert "| 1 | 2 | 20 | 0.29 |" in md[3]
    assert "–" in md[2]  # missing values are shown as such, not as 0
    csv_lines = format_csv(summary).splitlines()
    assert csv_lines[0].split(",")[:3] == ["run", "mask.num_targets", "step"]


def test_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_runs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no run directories"):
        summarize(tmp_path)


def test_a_real_hydra_multirun_end_to_end(tmp_path):
    """``jepalab train -m`` over two values, then the script: one row per job."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep_dir = tmp_path / "multirun"
    tiny = [
        "encoder.embed_dim=32",
        "encoder.depth=1",
        "encoder.num_heads=2",
        "predictor.embed_dim=16",
        "predictor.depth=1",
        "data.batch_size=16",
        "trainer.max_steps=3",
        "trainer.progress=false",
        "trainer.log_every=1",
        "eval.probe=none",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    subprocess.run(
        [sys.executable, "-m", "jepalab.cli", "train", "-m", *tiny, "mask.num_targets=1,3"],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    script = load_script()
    assert script.main([str(sweep_dir), "--format", "json", "--out", str(tmp_path / "t.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["config_columns"] == ["mask.num_targets"]
    assert [row["mask.num_targets"] for row in table["rows"]] == [1, 3]
    assert all(row["step"] == 3 and row["loss"] > 0 for row in table["rows"])
    assert script.main([str(tmp_path / "nothing")]) == 2


# --- seeds and intervals (issue 26 point 4) ----------------------------------------------


def seeded_sweep(root: Path, accuracies: dict[int, list[float]]) -> Path:
    """Runs ``num_targets × seed`` with the given probe accuracy per seed, as a multirun."""
    job = 0
    for targets, per_seed in accuracies.items():
        for seed, acc in enumerate(per_seed):
            config = base_config(targets, 5e-4)
            config["trainer"]["seed"] = seed
            probe = {"trained encoder": {"test_accuracy": acc}}
            write_run(root / str(job), config, [{"step": 20, "loss": 0.1 + acc}], probe)
            job += 1
    return root


def test_t_quantiles_and_the_interval_formula():
    assert t_quantile_975(2) == 4.303 and t_quantile_975(30) == 2.042
    assert t_quantile_975(1000) == pytest.approx(1.9623, abs=1e-3)  # tables: 1.962
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3)  # tables: 2.000
    with pytest.raises(ValueError, match="at least 2 values"):
        t_quantile_975(0)
    ci = interval([0.5, 0.6, 0.7])  # mean 0.6, s = 0.1, n = 3
    assert ci.mean == pytest.approx(0.6)
    assert ci.half_width == pytest.approx(4.303 * 0.1 / 3**0.5)
    assert str(ci) == "0.6 ± 0.2484"
    one = interval([0.4])
    assert one.mean == 0.4 and str(one) == "0.4 (1 seed)"


def test_seeds_group_into_one_point_per_setting(tmp_path):
    root = seeded_sweep(tmp_path / "m", {1: [0.50, 0.52, 0.54], 4: [0.30, 0.31, 0.32]})
    summary = summarize(root)
    assert summary.config_columns == ["mask.num_targets", "trainer.seed"]
    groups = group_seeds(summary)
    assert [g.setting for g in groups] == [{"mask.num_targets": 1}, {"mask.num_targets": 4}]
    assert [g.seeds for g in groups] == [[0, 1, 2], [0, 1, 2]]
    acc = groups[0].metrics["probe/trained encoder"]
    assert acc.mean == pytest.approx(0.52) and acc.values == [0.50, 0.52, 0.54]
    assert acc.half_width == pytest.approx(4.303 * 0.02 / 3**0.5)
    table = format_seed_table(groups, ["probe/trained encoder"]).splitlines()
    assert table[0] == "| mask.num_targets | seeds | probe/trained encoder |"
    assert table[2] == "| 1 | 3 | 0.52 ± 0.0497 |"


def test_a_ranking_is_reproduced_only_when_the_intervals_separate(tmp_path):
    apart = group_seeds(
        summarize(seeded_sweep(tmp_path / "a", {1: [0.3, 0.31, 0.32], 4: [0.5, 0.52, 0.54]}))
    )
    text = ranking(apart, "probe/trained encoder")
    assert text.startswith("mask.num_targets=4 [0.52 ± ") and " > mask.num_targets=1 [" in text
    overlap = group_seeds(
        summarize(seeded_sweep(tmp_path / "b", {1: [0.3, 0.5, 0.4], 4: [0.35, 0.55, 0.45]}))
    )
    text = ranking(overlap, "probe/trained encoder")
    assert " ≈ " in text and ">" not in text.replace("->", "")
    # lower is better: the lower loss comes first
    assert ranking(apart, "loss", higher_is_better=False).startswith("mask.num_targets=1 ")
    with pytest.raises(ValueError, match="no group has the metric 'nope'"):
        ranking(apart, "nope")


def test_the_script_prints_intervals_and_the_ranking(tmp_path, capsys):
    root = seeded_sweep(tmp_path / "m", {1: [0.3, 0.31, 0.32], 4: [0.5, 0.52, 0.54]})
    script = load_script()
    assert script.main([str(root), "--seeds", "--rank", "probe/trained encoder"]) == 0
    out = capsys.readouterr().out
    assert "| mask.num_targets | seeds | loss | probe/trained encoder |" in out
    assert "ranking: mask.num_targets=4 [0.52 ± 0.0497] > mask.num_targets=1" in out
    assert script.main([str(root), "--seeds", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[1]["metrics"]["probe/trained encoder"]["values"] == [0.5, 0.52, 0.54]
    assert data[1]["seeds"] == [0, 1, 2] and len(data[1]["runs"]) == 3
    assert script.main([str(root), "--rank", "loss"]) == 2
    assert "--rank needs --seeds" in capsys.readouterr().err


def test_paired_differences_separate_what_the_seed_moves_in_both(tmp_path, capsys):
    """A seed that moves the trained and the random-init probe together hides a ranking in
    the raw accuracies; their per-run difference shows it."""
    root = tmp_path / "m"
    job = 0
    for targets, gain in ((1, 0.02), (4, 0.08)):
        for seed, base in enumerate((0.30, 0.40, 0.35)):
            config = base_config(targets, 5e-4)
            config["trainer"]["seed"] = seed
            probe = {
                "trained encoder": {"test_accuracy": base + gain + 0.002 * seed},
                "random-init encoder": {"test_accuracy": base},
            }
            write_run(root / str(job), config, [{"step": 20, "loss": 0.1}], probe)
            job += 1
    script = load_script()
    args = [str(root), "--seeds", "--metrics", "probe/.*", "--rank", "probe/trained encoder"]
    assert script.main(args) == 0
    assert " ≈ " in capsys.readouterr().out.splitlines()[-1]
    assert script.main([*args, "--paired", "probe/random-init encoder"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        last == "ranking: mask.num_targets=4 [0.082 ± 0.005] > mask.num_targets=1 [0.022 ± 0.005]"
    )
    assert script.main([str(root), "--seeds", "--paired", "x"]) == 2
    assert "--paired needs --rank" in capsys.readouterr().err
