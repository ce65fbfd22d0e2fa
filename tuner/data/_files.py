"""Finding the image files under the patch folder, symbolic links included.

Links are followed, and what that did is said: a folder that is a link to a folder outside the
patch folder is scanned (a dataset may be a tree of links into a slide archive); a link to a
folder that is scanned anyway (one inside the patch folder, or a loop) is skipped; and two
paths to the same file (a symbolic or hard link) count once, the path without a link winning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "find_images"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})


@dataclass
class ImageFiles:
    """Image files under a root: relative paths (with ``/``) in walk order, each file once."""

    paths: list[str] = field(default_factory=list)
    followed: list[str] = field(default_factory=list)  # linked folders scanned: "rel -> target"
    skipped: list[str] = field(default_factory=list)  # linked folders scanned elsewhere
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # a broken link: listed, and reported unreadable when decoded
        return None
    return stat.st_dev, stat.st_ino


def find_images(root: Path) -> ImageFiles:
    """The image files under ``root`` (sorted, depth first), following symbolic links."""
    real_folders = {_identity(Path(d)) for d, _, _ in os.walk(root)}
    seen_folders = set(real_folders)
    found = ImageFiles()
    candidates: list[tuple[str, tuple[int, int] | None, bool]] = []
    through_link = {str(root): False}
    for directory, subdirs, files in os.walk(root, followlinks=True):
        here = Path(directory)
        linked_here = through_link[directory]
        kept = []
        for name in sorted(subdirs):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                identity = _identity(path)
                if identity is None or identity in seen_folders:
                    found.skipped.append(rel)
                    continue
                seen_folders.add(identity)
                found.followed.append(f"{rel} -> {os.readlink(path)}")
            kept.append(name)
            through_link[str(path)] = linked_here or path.is_symlink()
        subdirs[:] = kept
        rel_dir = here.relative_to(root)
        for name in sorted(files):
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
                continue
            path = here / name
            linked = linked_here or path.is_symlink()
            candidates.append(((rel_dir / name).as_posix(), _identity(path), linked))
    keeper: dict[tuple[int, int], str] = {}
    for rel, identity, _ in sorted(candidates, key=lambda c: c[2]):  # stable sort: links last
        if identity is not None and identity in keeper:
            found.duplicates.append((rel, keeper[identity]))
        elif identity is not None:
            keeper[identity] = rel
    dropped = {rel for rel, _ in found.duplicates}
    found.paths = [rel for rel, _, _ in candidates if rel not in dropped]
    return found
