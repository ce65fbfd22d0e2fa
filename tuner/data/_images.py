"""Reading patch images, and finding the ones that cannot be read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tuner.data._index import Problem
from tuner.errors import DataError

__all__ = ["check_images", "image_size", "load_rgb"]


_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image fully as RGB; raise :class:`DataError` naming the file if it cannot."""
    try:
        return _decode(path)
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"patch image {str(path)!r} cannot be read ({_reason(exc)}); replace or delete it"
        ) from None


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image, read from its header."""
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"patch image {str(path)!r} cannot be read ({_reason(exc)}); replace or delete it"
        ) from None


def check_images(
    root: Path,
    paths: Iterable[str],
    *,
    workers: int = 4,
    progress: Callable[[int], object] | None = None,
) -> list[Problem]:
    """Decode every image; return one problem listing those that are unreadable or truncated."""
    paths = list(paths)

    def check(rel: str) -> str | None:
        try:
            _decode(root / rel)
        except _DECODE_ERRORS as exc:
            return f"{rel} ({_reason(exc)})"
        return None

    bad: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(check, paths, chunksize=64):
            if result is not None:
                bad.append(result)
            if progress is not None:
                progress(1)
    if not bad:
        return []
    return [
        Problem(
            "unreadable",
            f"{len(bad)} image(s) are unreadable or truncated (replace or delete them)",
            tuple(bad[:20]),
            len(bad),
            fatal=True,
        )
    ]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can decode"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]
