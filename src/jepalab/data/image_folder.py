"""ImageFolderDataset: users' own images, with the I-JEPA crop-only augmentation.

Layout ``root/<class_name>/<image files>`` (like torchvision's ImageFolder; class folders are
searched recursively), or a flat ``root/<image files>`` with no class folders (label -1).

Corrupt files are never silent: a file that cannot be decoded is logged (logger
``jepalab.data``), counted in ``num_corrupt``, and ``__getitem__`` returns ``None`` for it. A
collator drops ``None`` samples and counts them, so one bad file does not stop a long run but
many bad files do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from jepalab.data.files import scan_class_folders
from jepalab.data.registry import register_dataset

logger = logging.getLogger("jepalab.data")

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Errors PIL raises for undecodable files: UnidentifiedImageError and truncated data are
# OSErrors; some malformed headers raise ValueError/SyntaxError; oversized images raise
# DecompressionBombError (an Exception, not an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def build_transform(img_size: int, train: bool, crop_scale: tuple[float, float]) -> v2.Compose:
    """The I-JEPA image transform.

    Args:
        img_size: Side of the square output image.
        train: Random-resized-crop augmentation if True, else resize + centre crop.
        crop_scale: ``(min, max)`` area fraction of the random crop (training only).

    Returns:
        A transform mapping a PIL RGB image to a float32 tensor ``(3, img_size, img_size)``.
    """
    if train:
        # I-JEPA uses crop only: no flip or colour jitter, the predictor learns from masking.
        geometry = [v2.RandomResizedCrop(img_size, scale=tuple(crop_scale))]
    else:
        # Standard ImageNet evaluation ratio 256/224 between resize and centre crop.
        geometry = [v2.Resize(int(img_size * 256 / 224)), v2.CenterCrop(img_size)]
    return v2.Compose(
        [
            *geometry,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            v2.ToPureTensor(),  # plain Tensor, not a tv_tensors.Image subclass
        ]
    )


@register_dataset("image_folder")
class ImageFolderDataset(Dataset):
    """Images from ``root/<class_name>/*`` or a flat ``root/*``.

    Args:
        root: Dataset folder.
        img_size: Side of the square output image.
        train: I-JEPA training augmentation (random resized crop) if True, else the
            deterministic resize + centre crop used for evaluation.
        crop_scale: ``(min, max)`` area fraction of the random resized crop; ``(0.3, 1.0)`` is
            the I-JEPA setting.

    Attributes:
        classes: Sorted class folder names (empty for a flat folder).
        num_classes: ``len(classes)``.
        image_size: Side of the output image.
        in_chans: Number of image channels (3; every image is converted to RGB).
        samples: ``(path, label)`` pairs; label is -1 for a flat folder.
        num_corrupt: Number of undecodable files met so far **in this process** (each
            DataLoader worker has its own copy; the collator's per-batch count is authoritative
            across workers).

    ``__getitem__`` returns ``(image, label)`` with ``image`` a float32 tensor
    ``(3, img_size, img_size)``, or ``None`` if the file could not be decoded (skipped sample).
    """

    in_chans: int = 3

    def __init__(
        self,
        root: str | os.PathLike[str],
        img_size: int = 224,
        train: bool = True,
        crop_scale: tuple[float, float] = (0.3, 1.0),
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"ImageFolderDataset: root folder {str(self.root)!r} does not exist or is not a "
                "folder. Set the dataset root to a folder laid out as root/<class>/<images>."
            )
        if len(crop_scale) != 2 or not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(
                f"ImageFolderDataset: crop_scale={tuple(crop_scale)} must satisfy "
                "0 < min <= max <= 1."
            )
        if img_size < 1:
            raise ValueError(f"ImageFolderDataset: img_size must be positive, got {img_size}.")

        self.image_size = int(img_size)
        self.train = bool(train)
        self.num_corrupt = 0
        self.samples, self.classes = scan_class_folders(
            self.root, IMG_EXTENSIONS, "ImageFolderDataset", "image"
        )
        self.num_classes = len(self.classes)
        self.transform = build_transform(self.image_size, self.train, crop_scale)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> Tensor:
        """LongTensor ``(len,)`` of all labels (-1 everywhere for a flat folder)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        """Load, convert to RGB and transform one image.

        Args:
            index: Sample index in ``[0, len)``.

        Returns:
            ``(image, label)`` with ``image`` float32 ``(3, img_size, img_size)``, or ``None``
            when the file cannot be decoded (logged and counted in ``num_corrupt``).
        """
        path, label = self.samples[index]
        try:
            with Image.open(path) as raw:
                img = raw.convert("RGB")  # forces a full decode, so truncation surfaces here
        except _DECODE_ERRORS as exc:
            self.num_corrupt += 1
            logger.warning(
                "ImageFolderDataset: skipping corrupt image %s (%s: %s)",
                path,
                type(exc).__name__,
                exc,
            )
            return None
        return self.transform(img), label
