"""DigitsCanvas: the embedded default dataset (real handwritten digits, no download).

scikit-learn ships 1,797 handwritten digits as 8x8 images (values 0..16, 10 classes). Each digit
is upscaled to a random side length and pasted at a random position on a black canvas. The
translation and scale variation is deliberate: it makes the task non-trivial for a raw-pixel
linear classifier, so a linear probe on learned features measures something.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from jepalab.data.registry import register_dataset

# Normalisation constants for canvas intensities in [0, 1]. Obtained from a fixed sample with the
# default settings (canvas_size=32, digit_size=(12, 24)): all 1,797 digits, 20 passes of random
# placement after torch.manual_seed(0), i.e. 35,940 canvases; mean and std over every pixel,
# rounded to 4 decimals. They are kept fixed (not recomputed for other canvas/digit sizes) so
# that a checkpoint's input statistics never silently depend on dataset arguments.
DIGITS_MEAN = 0.1010
DIGITS_STD = 0.2360

_NUM_SOURCE_DIGITS = 1797
_SPLITS = ("train", "test", "all")
# Multiplier that separates the per-index generator seeds of different placement_seed values
# (a prime larger than the dataset, so (seed, index) pairs never collide).
_SEED_STRIDE = 1_000_003


def load_digit_split(
    split: str = "train", test_fraction: float = 0.25, split_seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """The source digits of one split, shared by :class:`DigitsCanvas` and ``MovingDigits``.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``. Train and test are a stratified split of
            ``load_digits()``, so they never share a digit and keep every class's share.
        test_fraction: Fraction of the source digits in the test split.
        split_seed: Seed of the train/test split.

    Returns:
        ``(digits, labels, source_indices)``: float32 ``(N, 8, 8)`` intensities in ``[0, 1]``,
        LongTensor ``(N,)`` digit classes and LongTensor ``(N,)`` indices into ``load_digits()``.
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown digits split {split!r}; use one of {list(_SPLITS)}.")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    targets = np.asarray(bunch.target, dtype=np.int64)
    all_idx = np.arange(len(targets))
    if split == "all":
        chosen = all_idx
    else:
        # Stratified so that every class keeps its share in both splits.
        train_idx, test_idx = train_test_split(
            all_idx, test_size=test_fraction, random_state=split_seed, stratify=targets
        )
        chosen = np.sort(train_idx if split == "train" else test_idx)
    digits = torch.from_numpy(images[chosen]).contiguous()
    return digits, torch.from_numpy(targets[chosen]).long(), torch.from_numpy(chosen).long()


@register_dataset("digits_canvas")
class DigitsCanvas(Dataset):
    """Handwritten sklearn digits, randomly scaled and placed on a black canvas.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``. Train and test are a stratified split of the
            source digits, so they never share a digit.
        canvas_size: Side of the square output canvas in pixels.
        digit_size: Inclusive ``(min, max)`` side length, in pixels, of the upscaled digit.
        random_placement: If True (training), every ``__getitem__`` draws size and position from
            the global torch RNG, so callers control reproducibility by seeding torch. If False
            (evaluation), the placement of each index is fixed and identical on every call and in
            every process.
        placement_seed: Seed of the fixed placement used when ``random_placement`` is False.
        test_fraction: Fraction of the source digits in the test split.
        split_seed: Seed of the train/test split.

    Attributes:
        num_classes: Number of classes (10).
        image_size: Side of the output image (``canvas_size``).
        in_chans: Number of image channels (1).
        source_indices: LongTensor ``(len,)``, index of each sample in ``load_digits()``.

    Samples are ``(image, label)`` with ``image`` a float32 tensor ``(1, canvas_size,
    canvas_size)`` normalised with ``(x - DIGITS_MEAN) / DIGITS_STD`` and ``label`` an int.
    """

    num_classes: int = 10
    in_chans: int = 1

    def __init__(
        self,
        split: str = "train",
        canvas_size: int = 32,
        digit_size: tuple[int, int] = (12, 24),
        random_placement: bool = True,
        placement_seed: int = 0,
        test_fraction: float = 0.25,
        split_seed: int = 0,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"DigitsCanvas: unknown split {split!r}; use one of {list(_SPLITS)}.")
        if len(digit_size) != 2:
            raise ValueError(
                f"DigitsCanvas: digit_size must be a (min, max) pair of ints, got {digit_size!r}."
            )
        lo, hi = int(digit_size[0]), int(digit_size[1])
        if not 1 <= lo <= hi:
            raise ValueError(
                f"DigitsCanvas: digit_size={tuple(digit_size)} must satisfy 1 <= min <= max."
            )
        if hi > canvas_size:
            raise ValueError(
                f"DigitsCanvas: digit_size max {hi} is larger than canvas_size {canvas_size}; "
                "the digit must fit fully inside the canvas. Lower digit_size or raise canvas_size."
            )
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"DigitsCanvas: test_fraction must be in (0, 1), got {test_fraction}.")

        self.split = split
        self.canvas_size = int(canvas_size)
        self.image_size = self.canvas_size
        self.digit_size = (lo, hi)
        self.random_placement = bool(random_placement)
        self.placement_seed = int(placement_seed)

        self._digits, self._labels, self.source_indices = load_digit_split(
            split, test_fraction, split_seed
        )

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> Tensor:
        """LongTensor ``(len,)`` of all labels in this split."""
        return self._labels.clone()

    def placement(self, index: int) -> tuple[int, int, int]:
        """Fixed placement ``(size, top, left)`` used for ``index`` when not random.

        Args:
            index: Sample index in ``[0, len)``.

        Returns:
            Side length of the digit and the row/column of its top-left corner on the canvas.
        """
        # A fresh generator per index makes the placement independent of access order, of the
        # global RNG state and of the process (DataLoader workers, DDP ranks).
        gen = torch.Generator().manual_seed(self.placement_seed * _SEED_STRIDE + index)
        return self._draw_placement(gen)

    def _draw_placement(self, gen: torch.Generator | None) -> tuple[int, int, int]:
        lo, hi = self.digit_size
        size = int(torch.randint(lo, hi + 1, (1,), generator=gen).item())
        free = self.canvas_size - size  # top/left range that keeps the digit fully inside
        top = int(torch.randint(0, free + 1, (1,), generator=gen).item())
        left = int(torch.randint(0, free + 1, (1,), generator=gen).item())
        return size, top, left

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Render one sample.

        Args:
            index: Sample index in ``[0, len)`` (negative indices count from the end).

        Returns:
            ``(image, label)``: float32 ``(1, canvas_size, canvas_size)`` normalised image and the
            digit class as an int.
        """
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"DigitsCanvas index {index} out of range for length {n}.")
        index = index % n
        if self.random_placement:
            size, top, left = self._draw_placement(None)  # global torch RNG
        else:
            size, top, left = self.placement(index)

        digit = self._digits[index][None, None]  # (1, 1, 8, 8)
        digit = F.interpolate(digit, size=(size, size), mode="bilinear", align_corners=False)
        canvas = torch.zeros(1, self.canvas_size, self.canvas_size, dtype=torch.float32)
        # Bilinear interpolation of values in [0, 1] stays in [0, 1]; clamp guards rounding.
        canvas[:, top : top + size, left : left + size] = digit[0].clamp_(0.0, 1.0)
        image = (canvas - DIGITS_MEAN) / DIGITS_STD
        return image, int(self._labels[index])
