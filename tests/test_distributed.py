"""Scale-out: DDP over gloo equals one process with the same global batch, gradient
accumulation equals a larger batch, and a killed distributed run resumes exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from jepalab.checkpoint import load_newest
from jepalab.data.sampling import ResumableBatchSampler, SampleKey
from jepalab.masks.collator import MaskCollator
from jepalab.masks.multiblock3d import MultiBlock3DMaskGenerator
from jepalab.methods.build import build_experiment
from jepalab.train import Trainer
from jepalab.train.distributed import detect_env, expand_nodelist, init_distributed
from jepalab.train.setup import build_trainer

from .conftest import TINY_OVERRIDES

WORLD = 2
TOL = 1e-5
# the tiny I-JEPA of the tests, for `jepalab train` in a subprocess
CLI_OVERRIDES = [*TINY_OVERRIDES, "trainer.threads=1", "eval.probe=none"]


# -- environment ---------------------------------------------------------------------------
def test_slurm_nodelists_expand_like_scontrol():
    assert expand_nodelist("gpu[01-03,07],cpu5") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]
    assert expand_nodelist("node7") == ["node7"]
    assert expand_nodelist("a[8-10]") == ["a8", "a9", "a10"]


def test_environment_detection(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    assert detect_env() is None  # a plain process
    assert init_distributed("auto").world_size == 1
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[12-15]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    assert detect_env() == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu12"
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)  # same for every task
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun inside an allocation wins
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert detect_env() == (3, 4, 3)
    with pytest.raises(ValueError, match="trainer.distributed"):
        init_distributed("always")


# -- the global batch and its parts ----------------------------------------------------------
def test_micro_batches_partition_the_global_batch():
    full = list(ResumableBatchSampler(100, 12, seed=3, total_steps=5))
    parts = {
        (rank, a): batch
        for rank in range(2)
        for a, batch in enumerate(
            ResumableBatchSampler(100, 12, 3, 5, rank=rank, world_size=2, accum_steps=3)
        )
    }
    for step, batch in enumerate(full):
        glued = [None] * 12
        for rank in range(2):
            for a in range(3):
                for key in parts[(rank, step * 3 + a)]:
                    assert key.step == step and key.batch_size == 12
                    glued[key.position] = key.index
        assert glued == [k.index for k in batch]
    with pytest.raises(ValueError, match="not divisible"):
        ResumableBatchSampler(100, 12, 3, 5, world_size=5)


def test_a_sample_gets_the_same_masks_however_the_batch_is_split():
    generator = MultiBlock3DMaskGenerator((2, 4, 4))
    collate = MaskCollator(generator, seed=0)
    images = [(torch.zeros(1, 4, 16, 16), 0)] * 6
    whole = collate([(s, SampleKey(i, 0, 7, i, 6)) for i, s in enumerate(images)])
    part = collate([(images[i], SampleKey(i, 0, 7, i, 6)) for i in (4, 5)])
    assert whole.fraction == 1.0 and part.fraction == pytest.approx(1 / 3)
    k, m = whole.masks.num_contexts, whole.masks.num_targets

    def as_lists(ragged, first, stop):
        return [s.tolist() for s in ragged.sequences()[first:stop]]

    assert as_lists(part.masks.context, 0, None) == as_lists(whole.masks.context, 4 * k, 6 * k)
    assert as_lists(part.masks.targets, 0, None) == as_lists(whole.masks.targets, 4 * m, 6 * m)
    assert torch.equal(part.masks.global_target_counts, whole.masks.target_counts())
    assert torch.equal(whole.masks.global_target_counts, whole.masks.target_counts())


@pytest.mark.parametrize("video", [False, True], ids=["ijepa", "vjepa"])
def test_loss_shares_add_up_to_the_whole_batch_loss(tiny_cfg, tiny_video_cfg, video):
    """Samples keep different numbers of target tokens, so the parts' token means do not
    average to the whole batch's; their shares (sums over global counts) add up exactly."""
    cfg = tiny_video_cfg if video else tiny_cfg
    exp = build_experiment(cfg)
    keys = [SampleKey(i, 0, 0, i, 8) for i in range(8)]
    items = [(exp.dataset[k.index], k) for k in keys]
    whole = exp.collate_fn(items)
    parts = [exp.collate_fn(items[i : i + 2]) for i in range(0, 8, 2)]
    assert len(set(whole.masks.targets.lengths.tolist())) > 1  # ragged: the point of the test
    with torch.no_grad():
        total = exp.method(whole).loss
        shares = [exp.method(p).loss for p in parts]
    assert float(sum(shares)) == pytest.approx(float(total), rel=1e-6)


# -- equivalences ----------------------------------------------------------------------------
def _configure(cfg, run_dir: Path, steps: int, **trainer):
    cfg.run_dir = str(run_dir)
    cfg.trainer.max_steps = steps
    cfg.trainer.monitor_every = 2
    cfg.optim.lr = cfg.optim.start_lr = 2e-3  # parameters that move, so differences show
    for key, value in trainer.items():
        setattr(cfg.trainer, key, value)
    return cfg


def _single(cfg) -> tuple[list[float], dict[str, torch.Tensor]]:
    trainer = build_trainer(cfg, build_experiment(cfg))
    losses = trainer.fit()
    return losses, trainer.method.state_dict()


def _assert_close(expected: dict, got: dict, tol: float = TOL) -> None:
    worst = max((expected[k] - got[k]).abs().max().item() for k in expected if expected[k].numel())
    assert worst < tol, f"parameters differ by {worst}"


def test_gradient_accumulation_equals_the_larger_batch(tiny_cfg, tmp_path):
    losses, params = _single(_configure(tiny_cfg, tmp_path / "a1", 4))
    accum_losses, accum_params = _single(_configure(tiny_cfg, tmp_path / "a4", 4, accum_steps=4))
    assert accum_losses == pytest.approx(losses, rel=1e-5)
    _assert_close(params, accum_params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, cfg, out: str, crash_at: int | None) -> None:
    """One rank, started the way torchrun starts it: the Trainer reads RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT and creates the gloo process group itself."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    trainer = build_trainer(cfg, build_experiment(cfg))
    assert trainer.dist.world_size == WORLD and trainer.dist.initialized
    if cfg.trainer.strategy == "fsdp":  # every parameter really is a shard
        assert all(isinstance(p, DTensor) for p in trainer.method.parameters())
    if crash_at is not None:
        step = trainer.train_step

        def dying_step(batches, window):
            if trainer.step == crash_at:
                raise KeyboardInterrupt("killed")
            return step(batches, window)

        trainer.train_step = dying_step
    try:
        losses = trainer.fit()
    except KeyboardInterrupt:
        losses = None
    finally:
        trainer.close()
    # the newest checkpoint: full (unsharded) parameters whatever the strategy
    state = load_newest(Path(cfg.run_dir) / "checkpoints")[1]["model"]
    torch.save({"losses": losses, "state": state}, Path(out) / f"rank{rank}.pt")


def _distributed(cfg, out: Path, crash_at: int | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    # fork: a spawned child re-imports torch and jepalab (~10 s each on this CPU)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _ddp_worker,
        args=(_free_port(), cfg, str(out), crash_at),
        nprocs=WORLD,
        start_method=method,
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize(
    "variant,accum,strategy",
    [("ema", 1, "ddp"), ("ema", 2, "ddp"), ("sigreg", 1, "ddp"), ("ema", 2, "fsdp")],
    ids=["ema", "ema-accum2", "sigreg", "fsdp-ema-accum2"],
)
def test_ddp_on_two_processes_equals_one_process(tiny_cfg, tmp_path, variant, accum, strategy):
    """A few steps of 2-process DDP (gloo) give the parameters of one process with the same
    global batch of 16, within 1e-5: I-JEPA with its EMA target, and with SIGReg instead
    (online target), whose statistic is all-reduced across the ranks. FSDP2 (sharded
    parameters, EMA updated shard by shard) too."""
    if variant == "sigreg":
        tiny_cfg.method.target = "online"
        tiny_cfg.method.regularizer = "sigreg"
    cfg = _configure(tiny_cfg, tmp_path / "one", 4)
    losses, params = _single(cfg)
    cfg = _configure(cfg, tmp_path / "ddp", 4, accum_steps=accum, strategy=strategy)
    ranks = _distributed(cfg, tmp_path / "o")
    for result in ranks:  # every rank holds the same model and saw the same global losses
        assert result["losses"] == pytest.approx(losses, rel=1e-5)
        _assert_close(params, result["state"])
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # rank 0 alone logs
    assert any("monitor/rankme" in r for r in rows)  # monitors run on rank 0


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_killed_distributed_run_resumes_exactly(tiny_cfg, tmp_path, strategy):
    """Both ranks killed at step 5, after the checkpoint at step 3: the resumed 2-process
    run reproduces the uninterrupted one bit for bit, drop-path noise included (every rank's
    RNG state is in the checkpoint); with FSDP the full checkpoint is re-sharded."""
    tiny_cfg.encoder.drop_path_rate = 0.2
    cfg = _configure(tiny_cfg, tmp_path / "straight", 7, ckpt_every=3, strategy=strategy)
    straight = _distributed(cfg, tmp_path / "o1")[0]
    cfg = _configure(tiny_cfg, tmp_path / "killed", 7, ckpt_every=3, strategy=strategy)
    assert _distributed(cfg, tmp_path / "o2", crash_at=5)[0]["losses"] is None
    state = torch.load(tmp_path / "killed" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert len(state["ranks"]) == WORLD
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    resumed = _distributed(cfg, tmp_path / "o3")[0]
    assert resumed["losses"] == straight["losses"][3:]
    for name, value in straight["state"].items():
        assert torch.equal(value, resumed["state"][name]), name


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_distributed_checkpoint_resumes_on_one_process(tiny_cfg, tmp_path, caplog, strategy):
    cfg = _configure(tiny_cfg, tmp_path / "run", 2, strategy=strategy)
    _distributed(cfg, tmp_path / "o")
    cfg.trainer.max_steps = 3
    trainer = build_trainer(cfg, build_experiment(cfg))
    assert type(trainer) is Trainer
    with caplog.at_level("WARNING"):
        assert len(trainer.fit()) == 1
    assert "written by 2 process(es)" in caplog.text


@pytest.mark.slow
def test_torchrun_launch_and_resume(tiny_cfg, tmp_path):
    """The real launcher: `torchrun --nproc_per_node 2 -m jepalab.cli train ...` stopped
    after 3 steps and started again (a requeued job) logs the losses of one process training
    6 steps on the same global batch."""
    overrides = CLI_OVERRIDES
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "requeued"

    def launch(steps: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={WORLD}",
            "-m",
            "jepalab.cli",
            "train",
            *overrides,
            f"run_dir={run_dir}",
            f"trainer.max_steps={steps}",
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(3)
    launch(6)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["loss"] for r in rows if "loss" in r]
    tiny_cfg.run_dir = str(tmp_path / "one")
    tiny_cfg.trainer.max_steps = 6
    assert logged == pytest.approx(
        build_trainer(tiny_cfg, build_experiment(tiny_cfg)).fit(), rel=1e-5
    )
    assert np.isfinite(logged).all() and len(logged) == 6


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from jepalab.config import config_dir, register_configs

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == 2 and launcher.tasks_per_node == launcher.gpus_per_node
    assert launcher.max_num_timeout > 0  # timeouts requeue; the run resumes from its checkpoint


@pytest.mark.slow
def test_submitit_launcher_runs_a_job(tmp_path):
    """Hydra's submitit launcher (locally: the same pickling and job path as on SLURM) runs
    a training job into multirun/<name>/<job number>, the directory a requeued job resumes
    from."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cmd = [
        sys.executable,
        "-m",
        "jepalab.cli",
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *CLI_OVERRIDES,
        "trainer.max_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (tmp_path / "sweep" / "0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows if '"loss"' in r] == [1, 2]
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "step_00000002.pt").is_file()
