"""The one Trainer: learning, exact resume after a kill, NaN stop, bad data, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from jepalab.checkpoint import list_checkpoints, load_newest, save_atomic
from jepalab.methods.base import Method, MethodOutput
from jepalab.methods.build import build_experiment
from jepalab.train import BadDataError, NonFiniteLossError, Trainer
from jepalab.train.optim import param_groups
from jepalab.train.schedules import cosine, warmup_cosine
from jepalab.train.setup import build_trainer, run_dir_of


def make_trainer(cfg, **trainer_overrides):
    for key, value in trainer_overrides.items():
        setattr(cfg.trainer, key, value)
    return build_trainer(cfg, build_experiment(cfg))


def test_loss_decreases_on_a_tiny_run(tiny_any_cfg):
    tiny_any_cfg.optim.lr = tiny_any_cfg.optim.start_lr = 2e-3
    trainer = make_trainer(tiny_any_cfg, max_steps=30)
    assert type(trainer) is Trainer  # I-JEPA and V-JEPA share the one loop
    losses = trainer.fit()
    assert len(losses) == 30
    # The masked ConvNeXt descends more slowly from the start (0.43 -> 0.32 in 30 steps; the
    # tiny ViTs fall faster, partly by shrinking their targets).
    ratio = 0.85 if tiny_any_cfg.encoder.name.startswith("convnext") else 0.7
    assert sum(losses[-5:]) / 5 < ratio * sum(losses[:5]) / 5


def test_kill_and_resume_reproduces_the_uninterrupted_run(tiny_any_cfg, tmp_path, monkeypatch):
    """A run killed mid-step resumes from its last checkpoint to bit-identical losses and
    parameters (CPU, fp32), for images and video. Drop path is on so the global RNG state
    matters too."""
    tiny_cfg = tiny_any_cfg
    tiny_cfg.encoder.drop_path_rate = 0.1
    tiny_cfg.trainer.ckpt_every = 4
    tiny_cfg.run_dir = str(tmp_path / "straight")
    straight = make_trainer(tiny_cfg, max_steps=10)
    expected = straight.fit()

    tiny_cfg.run_dir = str(tmp_path / "killed")
    killed = make_trainer(tiny_cfg, max_steps=10)
    original_step = Trainer.train_step

    def dying_step(self, batch, window):
        if self.step == 6:  # after the checkpoint at step 4, in the middle of the run
            raise KeyboardInterrupt("killed")
        return original_step(self, batch, window)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert [s for s, _ in list_checkpoints(tmp_path / "killed" / "checkpoints")] == [4]

    resumed = make_trainer(tiny_cfg, max_steps=10)  # a fresh process would build anew
    rest = resumed.fit()
    assert resumed.step == 10
    assert rest == expected[4:]
    for (name, a), b in zip(
        straight.method.state_dict().items(), resumed.method.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max()}"
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 11))  # re-logged steps replaced


def test_dataloader_workers_do_not_change_the_run(tiny_cfg, tmp_path):
    tiny_cfg.run_dir = str(tmp_path / "w0")
    in_process = make_trainer(tiny_cfg, max_steps=4).fit()
    tiny_cfg.run_dir = str(tmp_path / "w2")
    tiny_cfg.data.num_workers = 2
    with_workers = make_trainer(tiny_cfg, max_steps=4).fit()
    assert in_process == with_workers


class _NaNAfter(Method):
    def __init__(self, good_steps: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.good_steps, self.calls = good_steps, 0

    def forward(self, batch) -> MethodOutput:
        self.calls += 1
        scale = float("nan") if self.calls > self.good_steps else 1.0
        return MethodOutput(self.weight * batch.images.mean() * scale, {}, batch.images.shape[0])


def test_nan_loss_stops_loudly_and_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path):
    exp = build_experiment(tiny_cfg)
    tiny_cfg.trainer.ckpt_every = 2
    trainer = Trainer(
        _NaNAfter(good_steps=3),
        exp.dataset,
        exp.collate_fn,
        16,
        tiny_cfg.trainer,
        tiny_cfg.optim,
        tmp_path / "nan",
    )
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.fit()
    state = load_newest(tmp_path / "nan" / "checkpoints")[1]
    assert state["step"] == 2 and torch.isfinite(state["model"]["weight"])


class _FlakyDataset(torch.utils.data.Dataset):
    def __init__(self, bad_every: int):
        self.bad_every = bad_every

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return None if i % self.bad_every == 0 else (torch.full((1, 32, 32), float(i)), i % 10)


def test_unreadable_samples_are_counted_and_too_many_fail(tiny_cfg, tmp_path):
    exp = build_experiment(tiny_cfg)
    tiny_cfg.trainer.max_bad_sample_fraction = 0.5
    ok = Trainer(
        exp.method,
        _FlakyDataset(bad_every=8),
        exp.collate_fn,
        16,
        tiny_cfg.trainer,
        tiny_cfg.optim,
        tmp_path / "ok",
    )
    ok.fit()
    assert ok.samples_skipped == 8 and ok.samples_seen == 64  # 1 in 8, every one counted
    tiny_cfg.trainer.max_bad_sample_fraction = 0.01
    bad = Trainer(
        exp.method,
        _FlakyDataset(bad_every=2),
        exp.collate_fn,
        16,
        tiny_cfg.trainer,
        tiny_cfg.optim,
        tmp_path / "bad",
    )
    with pytest.raises(BadDataError, match="max_bad_sample_fraction"):
        bad.fit()


def test_checkpoints_are_atomic_pruned_and_a_damaged_one_is_skipped(tiny_cfg, tmp_path, caplog):
    trainer = make_trainer(tiny_cfg, max_steps=8, ckpt_every=2, keep_last=2)
    trainer.fit()
    ckpt_dir = run_dir_of(tiny_cfg) / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpt_dir)] == [6, 8]
    assert not [p for p in ckpt_dir.iterdir() if ".tmp" in p.name]
    (ckpt_dir / "step_00000008.pt").write_bytes(b"truncated")  # e.g. a disk error
    state = load_newest(ckpt_dir)[1]
    assert state["step"] == 6 and "unreadable" in caplog.text


def test_save_atomic_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "step_00000001.pt"
    save_atomic({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_schedules_follow_ijepa():
    assert warmup_cosine(0, 10, 100, 2e-4, 1e-3, 1e-6) == pytest.approx(2e-4)
    assert warmup_cosine(10, 10, 100, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert warmup_cosine(100, 10, 100, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-6)
    assert cosine(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine(100, 100, 0.04, 0.4) == pytest.approx(0.4)


def test_no_weight_decay_on_biases_norms_or_the_frozen_target(tiny_cfg):
    method = build_experiment(tiny_cfg).method
    decay, no_decay = param_groups(method)
    names = {id(p): n for n, p in method.named_parameters()}
    # the I-JEPA rule: no decay on biases and 1-D parameters (the mask token, 3-D, is decayed)
    assert all(not names[id(p)].endswith("bias") and p.ndim > 1 for p in decay["params"])
    assert any(names[id(p)] == "predictor.mask_tokens" for p in decay["params"])
    assert any(names[id(p)].endswith("norm1.weight") for p in no_decay["params"])
    trained = {id(p) for p in decay["params"] + no_decay["params"]}
    assert not any(id(p) in trained for p in method.target_encoder.parameters())


def test_trainer_steps_and_lr_schedule_are_logged(tiny_cfg):
    trainer = make_trainer(tiny_cfg, max_steps=3)
    trainer.fit()
    rows = [
        json.loads(line)
        for line in (run_dir_of(tiny_cfg) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["lr"] == pytest.approx(trainer.optim_cfg.start_lr)
    assert {"loss", "momentum", "wd", "images_per_s", "context_tokens"} <= set(rows[0])
