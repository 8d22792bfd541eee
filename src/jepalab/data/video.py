"""VideoDataset: users' own video files, decoded with decord, with the V-JEPA clip augmentation.

Defaults follow V-JEPA [0]: ``src/datasets/video_dataset.py`` samples ``frames_per_clip=16``
frames with ``frame_step=4``; ``app/vjepa/transforms.py`` applies one RandomResizedCrop to the
whole clip (``configs/pretrain/vitl16.yaml``: ``random_resize_scale: [0.3, 1.0]``,
``random_resize_aspect_ratio: [0.75, 1.35]``; the function default is ``(3/4, 4/3)``, used
here), a horizontal flip with probability 0.5 and ImageNet normalisation, and returns
``(C, T, H, W)`` clips. Differences from the reference, on purpose: frames are exactly
``frame_step`` apart (the reference spreads ``num_frames`` over ``num_frames * frame_step``
frames with ``np.linspace``, a step of about ``frame_step * T / (T - 1)``); an unreadable video
is skipped and counted instead of retried at a random index.

Sources:

* a **list file** (``.csv`` or ``.txt``), V-JEPA's format: one video per line, ``path label``
  separated by whitespace, or ``path,label``. The label column is optional (missing: -1); a
  first line whose label field is not an integer is a header and is skipped; blank lines are
  skipped; relative paths are resolved against the list file's folder::

      path label
      kinetics/abseiling/0001.mp4 0
      /data/kinetics/zumba/0042.mp4 399

* a **folder**: videos found recursively (extensions in :data:`VIDEO_EXTENSIONS`,
  case-insensitive, hidden entries skipped, sorted). ``root/<class_name>/...`` gives integer
  labels in sorted class-name order (like :class:`~jepalab.data.ImageFolderDataset`); a flat
  folder gives label -1.

Corrupt files are never silent: a video that cannot be opened or decoded (or has no frames) is
logged (logger ``jepalab.data``), counted in ``num_corrupt``, and ``__getitem__`` returns
``None``; in training another sample takes its place in the batch
(:class:`~jepalab.data.sampling.SeededDataset`), the collator counts it and the Trainer fails
once ``trainer.max_bad_sample_fraction`` is exceeded. (decord 0.6 cannot decode a few small
frame widths, 8, 12, 16, 24, 48 and 72 px, "The size must exactly match"; such files are
reported the same way.)

[0] Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual Representations from
    Video" (V-JEPA), https://github.com/facebookresearch/jepa
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from jepalab.data.files import scan_class_folders
from jepalab.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from jepalab.data.registry import register_dataset

logger = logging.getLogger("jepalab.data")

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")
LIST_EXTENSIONS: tuple[str, ...] = (".csv", ".txt")


def import_decord() -> ModuleType:
    """The ``decord`` module, imported on first use (decord has no wheels for some platforms, so
    only the code that decodes videos needs it).

    Raises:
        ImportError: If decord is not installed (the message says how to install it).
    """
    try:
        import decord
    except ImportError as exc:  # decord has no wheels for some platforms (e.g. macOS arm64)
        raise ImportError(
            "VideoDataset needs decord to read videos (`pip install decord`); on platforms "
            "without a decord wheel, build it from source (github.com/dmlc/decord)."
        ) from exc
    return decord


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_video_list(list_file: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """Parse a V-JEPA list file into ``(path, label)`` pairs (format in the module docstring).

    Args:
        list_file: ``.csv``/``.txt`` file, one ``path [label]`` per line, whitespace- or
            comma-separated (decided by the first non-blank line).

    Returns:
        ``(absolute path, label)`` per video, in file order; label -1 where the column is absent.

    Raises:
        FileNotFoundError: If a listed video does not exist (names the line and the path).
        ValueError: If a label is not an integer (other than in a header line) or the file
            lists no video.
    """
    list_file = Path(list_file).expanduser()
    lines = list_file.read_text().splitlines()
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    comma = bool(numbered) and "," in numbered[0][1]
    samples: list[tuple[Path, int]] = []
    for position, (lineno, line) in enumerate(numbered):
        # rsplit keeps spaces (whitespace format) or commas (CSV) inside the path itself.
        fields = [f.strip() for f in (line.rsplit(",", 1) if comma else line.rsplit(None, 1))]
        label = -1
        if len(fields) == 2:
            parsed = _parse_int(fields[1])
            if parsed is None:
                if position == 0:
                    continue  # header, e.g. "path label"
                raise ValueError(
                    f"VideoDataset: {list_file}, line {lineno}: label {fields[1]!r} is not an "
                    "integer; expected 'path label' (whitespace- or comma-separated) or 'path'."
                )
            label = parsed
        path = Path(fields[0]).expanduser()
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.is_file():
            raise FileNotFoundError(
                f"VideoDataset: {list_file}, line {lineno}: video {str(path)!r} does not exist "
                "(relative paths are resolved against the list file's folder)."
            )
        samples.append((path, label))
    if not samples:
        raise ValueError(f"VideoDataset: list file {str(list_file)!r} lists no videos.")
    return samples


def clip_indices(num_video_frames: int, num_frames: int, frame_step: int, train: bool) -> Tensor:
    """Frame indices of one clip: ``start + k * frame_step`` for ``k < num_frames``.

    The clip spans ``(num_frames - 1) * frame_step + 1`` frames. Training draws ``start``
    uniformly from the valid offsets (global torch RNG); evaluation takes the centred clip. A
    video shorter than the span starts at 0 and the indices past its end are clamped to the last
    frame, i.e. **the last frame is repeated** (as V-JEPA does without ``filter_short_videos``).

    Returns:
        LongTensor ``(num_frames,)``.
    """
    span = (num_frames - 1) * frame_step + 1
    slack = max(num_video_frames - span, 0)
    start = int(torch.randint(0, slack + 1, (1,)).item()) if train else slack // 2
    indices = start + frame_step * torch.arange(num_frames)
    return indices.clamp_(max=num_video_frames - 1)


@register_dataset("video_files")
class VideoDataset(Dataset):
    """Clips of ``num_frames`` frames from a list file or a folder of videos.

    Args:
        source: List file (``.csv``/``.txt``) or folder; see the module docstring.
        num_frames: Frames per clip (V-JEPA: 16).
        frame_step: Stride between sampled frames (V-JEPA ``sampling_rate``: 4).
        fps: If set, the stride of each video is ``max(1, round(video_fps / fps))`` instead of
            ``frame_step``, so clips cover the same duration whatever the file's frame rate
            (``frame_step`` is used for a file that reports no frame rate).
        img_size: Side of the square output frames.
        train: Random temporal offset, random resized crop and flip if True; else the centred
            clip, resized (short side ``int(img_size * 256 / 224)``) and centre-cropped.
        crop_scale: ``(min, max)`` area fraction of the random resized crop.
        crop_aspect: ``(min, max)`` aspect ratio (width / height) of the random resized crop.
        hflip: Probability of flipping the whole clip horizontally (training only).
        grayscale: Output one luma channel (ITU-R 601-2) instead of RGB.
        channels: 1 (grey) or 3 (RGB), instead of ``grayscale`` (the config passes
            ``data.channels``, so the encoder and the clips agree).
        mean: Per-channel normalisation mean; default ImageNet (its average for grayscale).
        std: Per-channel normalisation std; default ImageNet (its average for grayscale).
        max_decode_threads: decord decoding threads per reader (keep 1 with many workers).

    Attributes:
        samples: ``(path, label)`` pairs.
        classes: Class folder names (folder source), or ``["0", ..., str(max_label)]`` for a
            list file with labels; empty when unlabelled.
        num_classes: ``len(classes)``.
        in_chans: 1 if ``grayscale`` else 3.
        image_size: Side of the output frames.
        num_frames: Frames per clip.
        num_corrupt: Unreadable videos met so far **in this process** (each DataLoader worker
            has its own copy; the collator's per-batch count is authoritative).

    All randomness comes from the global torch RNG (wrap in
    :class:`~jepalab.data.sampling.SeededDataset` for worker-independent results). No decord
    reader is kept on the instance: each ``__getitem__`` opens and closes its own, so the
    dataset pickles to DataLoader workers and is safe to fork.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        num_frames: int = 16,
        frame_step: int = 4,
        fps: float | None = None,
        img_size: int = 224,
        train: bool = True,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        crop_aspect: tuple[float, float] = (0.75, 1.3333),
        hflip: float = 0.5,
        grayscale: bool = False,
        channels: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        max_decode_threads: int = 1,
    ) -> None:
        self.source = Path(source).expanduser()
        self.num_frames = int(num_frames)
        self.frame_step = int(frame_step)
        self.fps = None if fps is None else float(fps)
        self.image_size = int(img_size)
        self.train = bool(train)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_aspect = (float(crop_aspect[0]), float(crop_aspect[1]))
        self.hflip = float(hflip)
        if channels is not None:
            if channels not in (1, 3):
                raise ValueError(f"VideoDataset: channels={channels}; use 1 (grey) or 3 (RGB)")
            if grayscale and channels == 3:
                raise ValueError("VideoDataset: grayscale=true needs channels=1 (data.channels=1)")
            grayscale = channels == 1
        self.grayscale = bool(grayscale)
        self.in_chans = 1 if self.grayscale else 3
        self.max_decode_threads = int(max_decode_threads)
        self._validate(len(crop_scale), len(crop_aspect))
        self.mean, self.std = self._normalisation(mean, std)
        self.num_corrupt = 0
        self.samples, self.classes = self._load_source(self.source)
        self.num_classes = len(self.classes)

    def _validate(self, scale_len: int, aspect_len: int) -> None:
        if min(self.num_frames, self.frame_step, self.image_size, self.max_decode_threads) < 1:
            raise ValueError(
                f"VideoDataset: num_frames={self.num_frames}, frame_step={self.frame_step}, "
                f"img_size={self.image_size} and max_decode_threads={self.max_decode_threads} "
                "must all be positive."
            )
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"VideoDataset: fps must be positive or None, got {self.fps}.")
        lo, hi = self.crop_scale
        if scale_len != 2 or not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"VideoDataset: crop_scale={self.crop_scale} must satisfy 0 < min <= max <= 1."
            )
        lo, hi = self.crop_aspect
        if aspect_len != 2 or not 0.0 < lo <= hi:
            raise ValueError(
                f"VideoDataset: crop_aspect={self.crop_aspect} must satisfy 0 < min <= max."
            )
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"VideoDataset: hflip is a probability in [0, 1], got {self.hflip}.")

    def _normalisation(
        self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
    ) -> tuple[Tensor, Tensor]:
        if (mean is None) != (std is None):
            raise ValueError("VideoDataset: set both mean and std, or neither.")
        if mean is None or std is None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if self.grayscale:
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        if len(mean) != self.in_chans or len(std) != self.in_chans:
            raise ValueError(
                f"VideoDataset: mean/std need {self.in_chans} value(s) (grayscale="
                f"{self.grayscale}), got mean={tuple(mean)}, std={tuple(std)}."
            )
        shape = (self.in_chans, 1, 1, 1)  # broadcasts over (C, T, H, W)
        return torch.tensor(mean).view(shape), torch.tensor(std).view(shape)

    @staticmethod
    def _load_source(source: Path) -> tuple[list[tuple[Path, int]], list[str]]:
        if not source.exists():
            raise FileNotFoundError(
                f"VideoDataset: source {str(source)!r} does not exist. Pass a folder of videos "
                "or a .csv/.txt list file with one 'path label' per line."
            )
        if source.is_dir():
            return scan_class_folders(source, VIDEO_EXTENSIONS, "VideoDataset", "video")
        if source.suffix.lower() not in LIST_EXTENSIONS:
            raise ValueError(
                f"VideoDataset: source {str(source)!r} is neither a folder nor a list file "
                f"({', '.join(LIST_EXTENSIONS)}); to use a single video, put it in a folder."
            )
        samples = read_video_list(source)
        num_classes = max(label for _, label in samples) + 1
        return samples, [str(c) for c in range(num_classes)]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> Tensor:
        """LongTensor ``(len,)`` of all labels (-1 where unlabelled)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        """Decode, augment and normalise one clip.

        Args:
            index: Sample index in ``[0, len)``.

        Returns:
            ``(clip, label)`` with ``clip`` float32 ``(C, num_frames, img_size, img_size)``, or
            ``None`` when the video cannot be decoded (logged and counted in ``num_corrupt``).
        """
        path, label = self.samples[index]
        decord = import_decord()
        try:
            frames = self._decode(decord, path)
        # decord raises DECORDError for broken streams and RuntimeError for files it cannot
        # open; a zero-frame video raises ValueError below.
        except (decord.DECORDError, RuntimeError, OSError, ValueError) as exc:
            self.num_corrupt += 1
            logger.warning(
                "VideoDataset: skipping unreadable video %s (%s: %s)",
                path,
                type(exc).__name__,
                exc,
            )
            return None
        return self._transform(frames), label

    def _decode(self, decord: ModuleType, path: Path) -> Tensor:
        """The clip's frames as uint8 ``(T, 3, H, W)`` (channels-last strides, as decoded)."""
        # A reader per call: decord readers hold native decoder state and threads that must not
        # be pickled into, or forked with, DataLoader workers.
        reader = decord.VideoReader(
            str(path), num_threads=self.max_decode_threads, ctx=decord.cpu(0)
        )
        try:
            num_video_frames = len(reader)
            if num_video_frames == 0:
                raise ValueError("the video has no frames")
            step = self.frame_step
            if self.fps is not None:
                video_fps = float(reader.get_avg_fps())
                if math.isfinite(video_fps) and video_fps > 0:
                    step = max(1, round(video_fps / self.fps))
            indices = clip_indices(num_video_frames, self.num_frames, step, self.train)
            # Decode each needed frame once, even when a short video repeats its last frame.
            needed, inverse = torch.unique(indices, return_inverse=True)
            frames = torch.from_numpy(reader.get_batch(needed.tolist()).asnumpy())  # (n, H, W, 3)
        finally:
            del reader
        if len(needed) < len(indices):
            frames = frames[inverse]
        return frames.permute(0, 3, 1, 2)

    def _transform(self, frames: Tensor) -> Tensor:
        """uint8 ``(T, 3, H, W)`` -> normalised float32 ``(C, T, S, S)``, one op per step.

        Geometry is applied to the whole clip at once, so every frame gets the same crop and
        flip. Resizing runs on uint8 (torchvision's antialiased uint8 path, ~20x faster than
        float32 on CPU and what PIL does for images); the result is converted to float after.
        """
        if self.grayscale:
            # Before resizing: luma is linear per pixel, so this commutes with resizing and
            # resizes a third of the data.
            frames = TF.rgb_to_grayscale(frames, num_output_channels=1)
        size = self.image_size
        if self.train:
            # The torchvision v1 static method draws from the global torch RNG (10 tries, then
            # a centre crop), the same parameters v2.RandomResizedCrop uses.
            top, left, h, w = RandomResizedCrop.get_params(
                frames, list(self.crop_scale), list(self.crop_aspect)
            )
            clip = TF.resized_crop(frames, top, left, h, w, [size, size], antialias=True)
            # Always draw, so that hflip=0 and hflip=1 see the same crop under the same seed.
            if float(torch.rand(())) < self.hflip:
                clip = clip.flip(-1)
        else:
            clip = TF.resize(frames, [int(size * 256 / 224)], antialias=True)
            clip = TF.center_crop(clip, [size, size])
        clip = clip.permute(1, 0, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
        return clip.div_(255.0).sub_(self.mean).div_(self.std)  # (C, T, S, S)
