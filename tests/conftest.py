"""Shared fixtures: tiny configs and models that run in well under a second on 2 CPU cores."""

from __future__ import annotations

import os

# On a busy machine (CI beside other jobs, or the CPU-hog check of issue 23) torch's OpenMP
# threads spin-wait for each other; with a core taken by another process a notebook cell that
# takes ~1 min idle took over 10 min. Passive waiting (set before torch loads OpenMP; the
# notebook kernels and CLI subprocesses inherit it) keeps the suite's time proportional.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# The Triton kernels' tests (test_kernels.py) run under the Triton interpreter on a machine
# without a GPU. Triton decides interpreter-or-compiler when its own library is decorated, at
# its first import -- which torch._dynamo triggers early (via jepalab.config below) -- so the
# switch must be set here, before any other import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from jepalab.config import compose_config

TINY_OVERRIDES = [
    "encoder.embed_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "data.batch_size=16",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.log_every=1",
    "optim.warmup_epochs=0.2",
]


# V-JEPA on 4-frame 16x16 moving digits: a (2, 4, 4) tubelet grid.
TINY_VIDEO_OVERRIDES = [
    *TINY_OVERRIDES,
    "predictor.num_heads=2",
    "encoder.img_size=16",
    "encoder.patch_size=4",
    "encoder.num_frames=4",
    "data.params.digit_size=[6,8]",
    "data.params.speed=[0.5,1.5]",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}"])
    return cfg


@pytest.fixture
def tiny_video_cfg(tmp_path):
    return compose_config(
        TINY_VIDEO_OVERRIDES + [f"run_dir={tmp_path / 'run'}"], experiment="vjepa_moving_digits"
    )


@pytest.fixture(scope="session")
def two_rooms_data(tmp_path_factory):
    """A tiny Two-Rooms trajectory dataset: 40 random-walk episodes of 12 frames."""
    from jepalab.envs.collect import collect_two_rooms

    root = tmp_path_factory.mktemp("two_rooms") / "data"
    return collect_two_rooms(root, num_episodes=40, episode_length=12, seed=0, progress=False)


# V-JEPA 2-AC on the tiny Two-Rooms data: a random frozen encoder (4x4 grid), 6-frame windows.
TINY_ACTION_OVERRIDES = [
    *TINY_OVERRIDES,
    "method.encoder_checkpoint=null",
    "method.auto_steps=2",
    "predictor.depth=2",
    "data.params.frame_skip=2",  # a window spans 11 of the 12 frames
    "optim.clip_grad=null",
    "predictor.embed_dim=32",
    "trainer.epochs=8",  # 80 windows at batch 16: 5 steps per epoch
]


@pytest.fixture
def tiny_action_cfg(tmp_path, two_rooms_data):
    return compose_config(
        TINY_ACTION_OVERRIDES
        + [f"run_dir={tmp_path / 'run'}", f"data.params.root={two_rooms_data}"],
        experiment="two_rooms_ac",
    )


# I-JEPA with a masked ConvNeXt context encoder: 4 stages of 1 block, widths 16-32, 8x8 grid.
TINY_CONVNEXT_OVERRIDES = [
    *(o for o in TINY_OVERRIDES if not o.startswith("encoder.")),
    "encoder=convnextv2_atto",
    "encoder.dims=[16,16,32,32]",
    "encoder.depths=[1,1,1,1]",
]


@pytest.fixture
def tiny_convnext_cfg(tmp_path):
    return compose_config(
        TINY_CONVNEXT_OVERRIDES + [f"run_dir={tmp_path / 'run'}"],
        experiment="ijepa_digits_convnext",
    )


@pytest.fixture(params=["ijepa", "vjepa", "action", "ijepa_convnext"])
def tiny_any_cfg(request):
    """The tiny config of every method (and encoder family): all train in the one Trainer."""
    name = {
        "ijepa": "tiny_cfg",
        "vjepa": "tiny_video_cfg",
        "action": "tiny_action_cfg",
        "ijepa_convnext": "tiny_convnext_cfg",
    }
    return request.getfixturevalue(name[request.param])


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
