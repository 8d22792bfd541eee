"""Finding media files on disk: the folder layouts shared by the image and video datasets.

``root/<class_name>/**/<file>`` gives integer labels in sorted class-name order (torchvision's
ImageFolder convention, searched recursively); a flat ``root/<file>`` gives label -1. Hidden
files and folders (``.ipynb_checkpoints``, ``.DS_Store``) are never data and are skipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("jepalab.data")


def has_extension(name: str, extensions: tuple[str, ...]) -> bool:
    """True for a non-hidden file name ending in one of ``extensions`` (case-insensitive)."""
    return name.lower().endswith(extensions) and not name.startswith(".")


def files_under(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All matching files below ``folder`` (recursive, sorted, hidden entries skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Editing dirnames in place prunes the walk.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if has_extension(f, extensions))
    return found


def scan_class_folders(
    root: Path, extensions: tuple[str, ...], owner: str, kind: str
) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(samples, classes)`` of a class-folder or flat layout.

    Args:
        root: dataset folder.
        extensions: accepted file name endings, lower case.
        owner: dataset class name, for messages (e.g. ``"ImageFolderDataset"``).
        kind: what the files are, for messages (``"image"``, ``"video"``).

    Raises:
        ValueError: no matching file anywhere (the message names the folder and extensions).
    """
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [(d.name, files_under(d, extensions)) for d in class_dirs]
    per_class = [(name, files) for name, files in per_class if files]
    top_level = sorted(
        p for p in root.iterdir() if p.is_file() and has_extension(p.name, extensions)
    )
    if per_class:
        if top_level:
            # Mixing layouts is almost always a mistake; say so rather than guess a label.
            logger.warning(
                "%s: ignoring %d %s(s) directly in %s because class folders exist; move them "
                "into a class folder to use them.",
                owner,
                len(top_level),
                kind,
                root,
            )
        classes = [name for name, _ in per_class]
        samples = [(f, label) for label, (_, files) in enumerate(per_class) for f in files]
        return samples, classes
    if top_level:
        return [(f, -1) for f in top_level], []
    raise ValueError(
        f"{owner}: no {kind}s found in {str(root)!r} (searched class subfolders and the folder "
        f"itself for extensions {', '.join(extensions)}, case-insensitive)."
    )
