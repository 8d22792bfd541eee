"""Unreadable files in training and in the probe, on real photos and clips with broken files:
a batch is refilled deterministically, a run stops only above the limit (naming the step of
the logs), and the probe skips and counts what training skipped."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest
import torch

from jepalab import create_encoder
from jepalab.checkpoint import list_checkpoints
from jepalab.cli.train import train
from jepalab.data import VideoDataset
from jepalab.data.sampling import ResumableBatchSampler
from jepalab.eval.features import extract_features
from jepalab.methods.build import build_experiment
from jepalab.train import BadDataError, Trainer
from jepalab.train.setup import build_trainer

from .artefacts import (
    image_folder_with_broken_files,
    photo_folder,
    text_named_jpeg,
    truncate,
    video_folder_with_broken_files,
)
from .conftest import compose_config

# a tiny I-JEPA on 32 px RGB photos (4 px patches: an 8x8 grid, as the digits default)
TINY_PHOTO_OVERRIDES = [
    "data=image_folder",
    "data.num_workers=0",
    "encoder.img_size=32",  # the images follow (data.params.img_size), as the channels do
    "encoder.depth=1",
    "encoder.embed_dim=32",
    "encoder.num_heads=2",
    "predictor.depth=1",
    "predictor.embed_dim=16",
    "predictor.num_heads=2",
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.monitor_every=0",
]

BATCH, BAD_STEP = 4, 2  # the batch of step 2 (counted from 0; logged as step 3) is unreadable


def test_cli_probe_splits_on_the_command_line_skip_and_count_broken_files(tmp_path):
    """`jepalab train data=image_folder data.probe.train.root=... data.probe.test.root=...`
    as typed: training replaces the broken files, the probe leaves them out and counts them
    in probe.json and the log."""
    train = image_folder_with_broken_files(tmp_path, "train")
    probe_train = image_folder_with_broken_files(tmp_path, "probe_train", first=4)
    probe_test = image_folder_with_broken_files(tmp_path, "probe_test")
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepalab.cli",
            "train",
            *TINY_PHOTO_OVERRIDES,
            f"data.params.root={train.root}",
            f"data.probe.train.root={probe_train.root}",
            f"data.probe.test.root={probe_test.root}",
            "data.batch_size=10",  # every file, broken ones included, in every step
            "trainer.max_steps=2",
            "trainer.max_bad_sample_fraction=0.5",
            f"run_dir={run_dir}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "step_00000002.pt").is_file()
    report = json.loads((run_dir / "probe.json").read_text())
    assert report["splits"] == {
        "train": {"samples": len(probe_train.good), "skipped": len(probe_train.broken)},
        "test": {"samples": len(probe_test.good), "skipped": len(probe_test.broken)},
    }
    assert {"raw pixels", "random-init encoder", "trained encoder"} <= set(report)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # both broken files of the training folder are drawn (and replaced) in every step
    assert rows[0]["skipped_samples"] >= 2 and rows[1]["skipped_samples"] >= 4
    output = proc.stdout + proc.stderr
    assert "probe train split: 8 samples probed, 2 unreadable skipped" in output
    assert "probe test split: 8 samples probed, 2 unreadable skipped" in output
    for broken in train.broken + probe_train.broken:
        assert broken.name in output
    assert "step 1: sample" in output and "step 2: sample" in output  # the logged steps


def test_image_folder_without_probe_splits_trains_and_says_there_is_no_probe(tmp_path, caplog):
    """Unset probe roots do not stop `train` (the command works as typed): a warning before
    training names the keys and the way out, and no probe runs; `eval.probe=none` and
    `data.probe=null` still mean "no probe"."""
    photos = image_folder_with_broken_files(tmp_path)
    base = [*TINY_PHOTO_OVERRIDES, f"data.params.root={photos.root}", f"run_dir={tmp_path / 'r'}"]
    with caplog.at_level("WARNING", logger="jepalab.cli.train"):
        summary = train(compose_config([*base, "trainer.max_steps=1", "data.batch_size=4"]))
    assert "data.probe.test.root, data.probe.train.root are not set" in caplog.text
    assert "eval.probe=none" in caplog.text
    assert summary["step"] == 1 and "probe" not in summary
    assert not (tmp_path / "r" / "probe.json").exists()
    for off in ("eval.probe=none", "data.probe=null"):
        cfg = compose_config([*base, off])
        assert len(build_experiment(cfg).dataset) == 10  # the training data alone is needed


def _photos_with_an_unreadable_batch(tmp_path):
    """16 real photos whose files drawn for step ``BAD_STEP`` (at seed 0) are all broken."""
    root = tmp_path / "photos"
    files = photo_folder(root, per_class=8)  # the datasets' order: sorted class, then name
    sampler = ResumableBatchSampler(len(files), BATCH, seed=0, total_steps=BAD_STEP + 1)
    bad = [files[key.index] for key in list(sampler)[BAD_STEP]]
    for i, path in enumerate(bad):  # half cut short, half not images at all
        if i % 2:
            truncate(path)
        else:
            text_named_jpeg(path)
    return root, bad


def _photo_cfg(tmp_path, root, name, **trainer):
    cfg = compose_config(
        TINY_PHOTO_OVERRIDES
        + [
            f"data.params.root={root}",
            f"data.batch_size={BATCH}",
            "eval.probe=none",
            "trainer.epochs=1",
            f"run_dir={tmp_path / name}",
        ]
        + [f"trainer.{k}={v}" for k, v in trainer.items()]
    )
    return cfg


def _recording_trainer(cfg, record):
    """The experiment's Trainer, its collator recording each batch's step, images and
    unreadable count."""
    exp = build_experiment(cfg)
    collate = exp.collate_fn

    def recording(items):
        batch = collate(items)
        record[batch.step] = (batch.images.clone(), batch.skipped)
        return batch

    return build_trainer(cfg, dataclasses.replace(exp, collate_fn=recording))


def test_an_unreadable_batch_is_refilled_the_same_way_on_a_rerun_and_a_resume(
    tmp_path, monkeypatch, caplog
):
    root, bad = _photos_with_an_unreadable_batch(tmp_path)
    first, again, resumed = {}, {}, {}
    with caplog.at_level(logging.WARNING):
        losses = _recording_trainer(
            _photo_cfg(tmp_path, root, "first", max_bad_sample_fraction=0.5), first
        ).fit()
    assert len(losses) == 4 and all(len(x) == BATCH for x, _ in first.values())
    assert first[BAD_STEP][1] >= BATCH and all(first[s][1] == 0 for s in (0, 1, 3))
    for path in bad:  # the dataset names the file, the sampler the step of the logs
        assert path.name in caplog.text
    assert f"step {BAD_STEP + 1}: sample" in caplog.text

    rerun = _recording_trainer(
        _photo_cfg(tmp_path, root, "again", max_bad_sample_fraction=0.5), again
    )
    assert rerun.fit() == losses
    for step, (images, skipped) in first.items():
        assert torch.equal(again[step][0], images) and again[step][1] == skipped

    cfg = _photo_cfg(tmp_path, root, "killed", max_bad_sample_fraction=0.5, ckpt_every=2)
    killed = _recording_trainer(cfg, {})
    original_step = Trainer.train_step

    def dying_step(self, batch, window):
        if self.step == BAD_STEP:  # after the checkpoint of step 2, before the bad batch
            raise KeyboardInterrupt("killed")
        return original_step(self, batch, window)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert [s for s, _ in list_checkpoints(tmp_path / "killed" / "checkpoints")] == [BAD_STEP]
    rest = _recording_trainer(cfg, resumed).fit()
    assert rest == losses[BAD_STEP:]
    assert torch.equal(resumed[BAD_STEP][0], first[BAD_STEP][0])


def test_too_many_unreadable_samples_stop_the_run_naming_the_step_of_the_logs(tmp_path):
    root, _ = _photos_with_an_unreadable_batch(tmp_path)
    cfg = _photo_cfg(tmp_path, root, "strict", max_bad_sample_fraction=0.01)
    trainer = build_trainer(cfg, build_experiment(cfg))
    with pytest.raises(BadDataError, match=rf"^step {BAD_STEP + 1}: .*max_bad_sample_fraction"):
        trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "strict" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, BAD_STEP + 1))  # the last good step


def test_probe_features_of_a_video_folder_skip_and_count_broken_clips(tmp_path):
    """`jepalab eval probe`'s feature pass on real H.264 clips with a zero-byte and a
    truncated .mp4: the readable clips only (before: None reached default_collate)."""
    videos = video_folder_with_broken_files(tmp_path)
    dataset = VideoDataset(videos.root, num_frames=2, frame_step=2, img_size=16, train=False)
    encoder = create_encoder(
        "vit_tiny_patch16",
        img_size=16,
        patch_size=8,
        num_frames=2,
        tubelet_size=2,
        embed_dim=32,
        depth=1,
        num_heads=2,
    ).eval()
    features = extract_features(
        encoder,
        dataset,
        pooled=True,
        tokens=True,
        pooling="mean",
        batch_size=2,
        device=torch.device("cpu"),
        desc="test features",
        progress=False,
    )
    assert len(features.labels) == len(videos.good) == len(dataset) - len(videos.broken)
    assert features.pooled.shape == (3, 32) and features.tokens.shape == (3, 4, 32)
    # cartoon (label 0): bigbuckbunny; city (label 1): bikes, carphone
    assert features.labels.tolist() == [0, 1, 1]
