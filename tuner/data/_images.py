"""Reading patch images as 8-bit RGB, and finding the ones that cannot be read (faithfully).

Pillow's own ``convert("RGB")`` clips a 16-bit grey image (mode ``I;16``, as Pillow opens a
16-bit grey PNG or TIFF) to 0..255, which turns almost every pixel white. Here 16-bit values
are scaled to 8 bits (``round(v / 257)``, so a 16-bit copy ``x * 257`` of an 8-bit image reads
back as ``x``), 32-bit integers in 0..65535 likewise and floats in 0..1 by 255. 16-bit RGB(A)
and grey+alpha PNGs Pillow itself opens as 8 bits per channel (the high byte), which is right.
What cannot be turned into RGB without guessing (CMYK, whose colours depend on a profile that
Pillow ignores; floats or integers outside those ranges; other modes) is refused with the
reason, so that no patch is silently read as something else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tuner.data._index import Problem
from tuner.errors import DataError

__all__ = ["check_images", "image_size", "load_rgb", "to_rgb"]


_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)
_AS_IS = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "YCbCr"})
"""Modes whose ``convert("RGB")`` keeps every value (an alpha channel is dropped)."""
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class UnfaithfulImage(ValueError):
    """An image that decodes but cannot be turned into 8-bit RGB without guessing."""


def load_rgb(path: Path) -> Image.Image:
    """Decode an image fully as 8-bit RGB; raise :class:`DataError` naming the file if it
    cannot be read, or cannot be read faithfully."""
    try:
        return _decode(path)
    except UnfaithfulImage as exc:
        raise DataError(
            f"patch image {str(path)!r} cannot be read faithfully ({exc}); convert it to 8- or "
            "16-bit RGB or grey"
        ) from None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"patch image {str(path)!r} cannot be read ({_reason(exc)}); replace or delete it"
        ) from None


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB with its values scaled, not clipped; :class:`UnfaithfulImage`
    when there is no faithful way."""
    mode = image.mode
    if mode in _AS_IS:
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise UnfaithfulImage(
                f"32-bit integer values {values.min()}..{values.max()}, outside 0..65535"
            )
        grey = (values + 128) // 257
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values.size > 0 and bool(np.isfinite(values).all())
        if not (finite and 0 <= values.min() <= values.max() <= 1):
            raise UnfaithfulImage(
                f"floating-point values {np.nanmin(values):.3g}..{np.nanmax(values):.3g}, "
                "outside 0..1"
            )
        grey = np.rint(values * 255)
    elif mode == "CMYK":
        raise UnfaithfulImage("CMYK colour, whose RGB depends on a colour profile")
    else:
        raise UnfaithfulImage(f"image mode {mode}")
    return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")


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
    """Decode every image; return a problem listing those that are unreadable or truncated,
    and one listing those that cannot be read faithfully (both fatal: extraction refuses them,
    and features of a misread patch would be wrong without a word)."""
    paths = list(paths)

    def check(rel: str) -> tuple[str, str] | None:
        try:
            _decode(root / rel)
        except UnfaithfulImage as exc:
            return "unfaithful", f"{rel} ({exc})"
        except _DECODE_ERRORS as exc:
            return "unreadable", f"{rel} ({_reason(exc)})"
        return None

    bad: dict[str, list[str]] = {"unreadable": [], "unfaithful": []}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(check, paths, chunksize=64):
            if result is not None:
                bad[result[0]].append(result[1])
            if progress is not None:
                progress(1)
    messages = {
        "unreadable": "image(s) are unreadable or truncated (replace or delete them)",
        "unfaithful": "image(s) cannot be read faithfully as 8-bit RGB (convert them to 8- or "
        "16-bit RGB or grey)",
    }
    return [
        Problem(kind, f"{len(found)} {messages[kind]}", tuple(found[:20]), len(found), fatal=True)
        for kind, found in bad.items()
        if found
    ]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can decode"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]
