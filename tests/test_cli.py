"""The command line's contract: a user error is one line ``jepalab <cmd>: error: ...`` with
exit code 2 (``--debug`` / HYDRA_FULL_ERROR=1: the traceback), ``--help`` exits 0 at every
level, config values are checked before training, outputs before compute, progress is plain
lines when stderr is not a terminal, and eval / plan skip a damaged newest checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jepalab.cli.plan as plan_module
import jepalab.cli.probe as probe_cli
import jepalab.cli.surprise as surprise_cli
from jepalab.checkpoint import checkpoint_path
from jepalab.cli import main
from jepalab.methods.build import build_experiment
from jepalab.train import NonFiniteLossError, Trainer

from .conftest import TINY_OVERRIDES
from .test_eval_probe import FAST_PROBES, train_tiny_run
from .test_trainer import _NaNAfter

# the tiny I-JEPA of the tests, for `jepalab train` in a subprocess (as in test_distributed.py)
TINY_CLI = [o for o in TINY_OVERRIDES if o != "trainer.log_every=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_error_line(err: str, prog: str) -> str:
    """The single stderr line of a user error (fails on a traceback or anything more)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def run_cli(*args: str, cwd=None, env=None, stderr=subprocess.PIPE):
    return subprocess.run(
        [sys.executable, "-m", "jepalab.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env or ENV,
    )


# -- A: one-line errors, --debug, --help -------------------------------------------------------
def test_train_errors_are_one_line_with_exit_code_2(tmp_path):
    """The real process: a misspelt key (Hydra's composition) and a bad value (in the task)."""
    typo = run_cli("train", "optim.lrr=0.1", cwd=tmp_path)
    assert typo.returncode == 2
    assert "optim.lrr" in one_error_line(typo.stderr, "jepalab train")
    bad = run_cli("train", "data.batch_size=0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "data.batch_size=0: must be >= 1" in one_error_line(bad.stderr, "jepalab train")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--debug", "train", "data.batch_size=0"], {}),
        (["train", "data.batch_size=0", "--debug"], {}),
        (["train", "data.batch_size=0"], {"HYDRA_FULL_ERROR": "1"}),
    ],
)
def test_debug_shows_the_traceback(tmp_path, args, env):
    proc = run_cli(*args, cwd=tmp_path, env={**ENV, **env})
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError: data.batch_size=0" in proc.stderr


HELP = [
    ["--help"],
    ["train", "--help"],
    ["list", "--help"],
    ["collect", "--help"],
    ["convert", "-h"],
    ["convert-trajectories", "--help"],
    ["eval", "--help"],
    ["eval", "probe", "--help"],
    ["eval", "surprise", "-h"],
    ["plan", "--help"],
]


def test_help_exits_0_at_every_level(capsys):
    for args in HELP:
        assert main(args) == 0, args
        assert len(capsys.readouterr().out.splitlines()) > 3, args  # the help text


def test_every_command_reports_user_errors_as_one_line(tmp_path, capfd):
    """One case per command: the line names the file, key or option to change."""
    existing = tmp_path / "rooms"
    existing.mkdir()
    (existing / "meta.json").write_text("{}")
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, frames=np.zeros((2, 4, 8, 8), np.uint8))  # no actions
    missing = tmp_path / "missing"
    cases = [  # (argv, what the line must name)
        (["list", "--bogus"], "--bogus"),
        (["collect", f"out={existing}", "episodes=2"], str(existing)),
        (["collect", "episodes=two"], "episodes"),
        (
            ["convert", f"src={missing}", "out=o", "src_format=ijepa", "out_format=jepalab"],
            str(missing),
        ),
        (["convert", "src=a", "out=b", "out_format=nope"], "out_format"),
        (
            ["convert", "--from", "ijepa"],
            "src_format=ijepa instead of --from ijepa",
        ),  # earlier style
        (["convert-trajectories", f"src={arrays}", f"out={tmp_path / 'd'}"], "actions"),
        (["convert-trajectories", f"src={missing}", f"out={tmp_path / 'd'}"], str(missing)),
        (["convert-trajectories", str(arrays)], f"src={arrays}"),
        (["collect", "--no-progress"], "progress=false"),
        (["eval"], "probe"),
        (["eval", "probe", f"ckpt={missing}"], str(missing)),
        (["eval", "probe", "ckpt=x", "linear.lrr=[0.1]"], "lrr"),
        (["eval", "surprise", "ckpt=x", "pairz=3"], "pairz"),
        (["plan", f"ckpt={missing}"], str(missing)),
        (["plan"], "ckpt"),
        (["plan", f"ckpt={missing}", "planner=adam"], "planner"),
        (["plan", str(missing)], f"ckpt={missing}"),  # the argparse style of earlier versions
        (["plan", "ckpt=x", "--episodes", "3"], "episodes=3 instead of --episodes 3"),
    ]
    for args, named in cases:
        prog = " ".join(["jepalab", *args[: 2 if args[0] == "eval" and len(args) > 1 else 1]])
        assert main(args) == 2, args
        assert named in one_error_line(capfd.readouterr().err, prog), args


# -- C: config values checked at compose time ---------------------------------------------------
BAD_VALUES = [
    "data.batch_size=0",
    "data.batch_size=-4",
    "data.num_workers=-1",
    "trainer.epochs=0",
    "trainer.max_steps=0",
    "trainer.ckpt_every=0",
    "trainer.log_every=0",
    "trainer.keep_last=-1",
    "trainer.accum_steps=0",
    "trainer.max_bad_sample_fraction=1.5",
    "trainer.device=gpu",
    "trainer.precision=fp16",
    "trainer.strategy=zero3",
    "encoder.img_size=0",
    "encoder.patch_size=0",
    "encoder.patch_size=5",  # does not divide img_size=32
    "encoder.embed_dim=0",
    "encoder.depth=0",
    "encoder.num_heads=0",
    "encoder.num_frames=0",
    "encoder.tubelet_size=0",
    "predictor.embed_dim=0",
    "predictor.depth=0",
    "predictor.num_heads=0",
    "mask.num_targets=0",
    "mask.context_scale=[0.9,0.5]",
    "mask.target_scale=[0,0.2]",
    "mask.target_scale=[0.15,1.2]",
    "mask.aspect_ratio=[0,1.5]",
    "method.name=byol",
    "method.loss=l3",
    "method.target=student",
    "method.regularizer=barlow",
    "eval.probe=svm",
]


@pytest.mark.parametrize("override", BAD_VALUES)
def test_bad_values_are_named_before_training(override, tmp_path, monkeypatch, capfd):
    """``jepalab train KEY=BAD``: exit 2, one line ``KEY=BAD: must ...``, and no training
    started (no checkpoint directory)."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY_CLI, f"run_dir={run_dir}", override]) == 2
    line = one_error_line(capfd.readouterr().err, "jepalab train")
    key = override.split("=")[0]
    assert line.startswith(f"jepalab train: error: {key}=") and ": must " in line
    assert not (run_dir / "checkpoints").exists()


def test_a_missing_data_root_shows_a_working_override(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    args = ["train", "data=image_folder", "eval.probe=none", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    line = one_error_line(capfd.readouterr().err, "jepalab train")
    assert "data.params.root=/path" in line and "data.data." not in line


# -- B: progress without a terminal -------------------------------------------------------------
def test_progress_in_a_log_file_is_lines_without_carriage_returns(tmp_path):
    """``jepalab train ... 2> log``: no tqdm frames, one line per 5% with the step, loss and
    timing."""
    log = tmp_path / "train.log"
    with open(log, "w") as stderr:
        proc = run_cli(
            "train",
            *TINY_CLI,
            "trainer.progress=true",
            "trainer.max_steps=4",
            "eval.probe=none",
            f"run_dir={tmp_path / 'run'}",
            cwd=tmp_path,
            stderr=stderr,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("train run: step ")]
    assert [line.split()[3] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "loss=" in lines[-1] and "elapsed" in lines[-1] and "eta" in lines[0]


def test_collect_progress_without_a_terminal(tmp_path, capfd):
    assert main(["collect", f"out={tmp_path / 'd'}", "episodes=4", "length=3"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "writing episodes: episode 4/4 (100%)" in err


# -- D: outputs checked before compute; damaged newest checkpoints skipped ----------------------
@pytest.fixture
def fake_run(tmp_path):
    """A run directory with a checkpoint file (never loaded by these tests)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint_path(run / "checkpoints", 1).write_bytes(b"not loaded")
    return run


def _no_compute(*args, **kwargs):
    raise AssertionError("computed before checking the output")


@pytest.mark.parametrize(
    ("argv", "loader"),
    [
        (["eval", "probe", "ckpt={run}", "out={blocked}/probe.json"], (probe_cli, "load_run")),
        (["eval", "surprise", "ckpt={run}", "out={blocked}/s.json"], (surprise_cli, "load_run")),
        (["plan", "ckpt={run}", "out={blocked}/plan.json"], (plan_module, "load_action_model")),
    ],
    ids=["probe", "surprise", "plan"],
)
def test_an_unwritable_output_folder_fails_before_compute(
    argv, loader, fake_run, tmp_path, monkeypatch, capfd
):
    """The output folder is checked before the checkpoint is even loaded."""
    blocked = tmp_path / "a_file"  # a file where the output folder should be
    blocked.write_text("")
    monkeypatch.setattr(*loader, _no_compute)
    args = [a.format(run=fake_run, blocked=blocked) for a in argv]
    assert main(args) == 2
    prog = " ".join(["jepalab", *argv[: 2 if argv[0] == "eval" else 1]])
    assert str(blocked) in one_error_line(capfd.readouterr().err, prog)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_output_folder_fails_before_compute(fake_run, tmp_path, monkeypatch, capfd):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    monkeypatch.setattr(probe_cli, "load_run", _no_compute)
    try:
        assert main(["eval", "probe", f"ckpt={fake_run}", f"out={folder}/p.json"]) == 2
    finally:
        folder.chmod(0o755)
    assert str(folder) in one_error_line(capfd.readouterr().err, "jepalab eval probe")


def _damage_newest(run_dir):
    """A newer checkpoint than the run's last one that does not load (a crash mid-copy)."""
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    step = int(ckpts[-1].stem.split("_")[1])
    damaged = checkpoint_path(run_dir / "checkpoints", step + 1)
    damaged.write_bytes(ckpts[-1].read_bytes()[:1000])
    return step, damaged


def test_eval_probe_skips_a_damaged_newest_checkpoint_and_writes_as_it_goes(
    tmp_path, monkeypatch, caplog
):
    run = train_tiny_run(TINY_OVERRIDES, tmp_path / "run", steps=2)
    step, damaged = _damage_newest(run)
    out = tmp_path / "probe.json"
    fast = [*FAST_PROBES, "probes=[knn]", f"out={out}"]
    with caplog.at_level("WARNING"):
        assert main(["eval", "probe", f"ckpt={run}", *fast]) == 0
    assert str(damaged) in caplog.text
    report = json.loads(out.read_text())
    assert report["step"] == step and report["complete"] is True

    # interrupted after the first encoder: its results are on disk
    calls = []
    real = probe_cli.probe_features

    def interrupted(name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(probe_cli, "probe_features", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        main(["eval", "probe", f"ckpt={run}", *fast])
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and list(partial["results"]) == calls[:1]


def test_plan_skips_a_damaged_newest_checkpoint_and_writes_per_policy(
    tmp_path, monkeypatch, caplog, capsys
):
    data = tmp_path / "two_rooms"
    collect = ["collect", f"out={data}", "episodes=20", "length=12"]
    assert main([*collect, "progress=false"]) == 0
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size")]
    run = tmp_path / "wm"
    train = ["train", "experiment=two_rooms_wm", *tiny, "data.batch_size=8"]
    train += ["data.params.frame_skip=2", f"data.params.root={data}", f"run_dir={run}"]
    assert main([*train, "trainer.max_steps=2"]) == 0
    step, damaged = _damage_newest(run)
    plan = ["plan", f"ckpt={run}", "episodes=1", "samples=8", "elites=2"]
    plan += ["iterations=1", "horizon=2", "max_steps=2", "progress=false"]
    plan += ["profile_pairs=0", "baselines=true"]
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert main(plan) == 0
    printed = capsys.readouterr()  # the warning: logging as `jepalab train` set it up
    assert str(damaged) in caplog.text + printed.out + printed.err
    summary = json.loads((run / "plan.json").read_text())
    assert summary["complete"] is True and len(summary["results"]) == 3

    # interrupted during the second policy: the first one's results are on disk
    (run / "plan.json").unlink()
    real, calls = plan_module.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "evaluate", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        main(plan)
    partial = json.loads((run / "plan.json").read_text())
    assert partial["complete"] is False
    assert list(partial["results"]) == ["CEM on the world model"]


@pytest.mark.parametrize(("good_steps", "names"), [(0, "no checkpoint"), (3, "step_00000002.pt")])
def test_the_nan_error_names_a_checkpoint_that_exists(tiny_cfg, tmp_path, good_steps, names):
    """The message points at a file on disk, or says that a restart begins at step 0."""
    exp = build_experiment(tiny_cfg)
    tiny_cfg.trainer.ckpt_every = 2
    trainer = Trainer(
        _NaNAfter(good_steps=good_steps),
        exp.dataset,
        exp.collate_fn,
        16,
        tiny_cfg.trainer,
        tiny_cfg.optim,
        tmp_path / "nan",
    )
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    message = str(err.value)
    assert names in message
    if good_steps:
        path = message.split("the last checkpoint is ")[1].split(" (step")[0]
        assert os.path.isfile(path)
    else:
        assert "step 0" in message
