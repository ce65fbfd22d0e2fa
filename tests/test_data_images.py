"""Patch images are read as the 8-bit RGB they show: 16-bit and float images scaled, not
clipped; images that cannot be read faithfully refused with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write_png16
from tuner.data import check_images, load_rgb
from tuner.errors import DataError

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
OPAQUE = np.full((12, 10, 1), 255, dtype=np.uint8)


def save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


WRITERS = {
    "16-bit grey PNG": (GREY, lambda p: save(Image.fromarray(GREY.astype(np.uint16) * 257), p)),
    "16-bit grey TIFF": (
        GREY,
        lambda p: save(Image.fromarray(GREY.astype(np.uint16) * 257), p.with_suffix(".tif")),
    ),
    "16-bit big-endian grey TIFF": (
        GREY,
        lambda p: save(
            Image.fromarray((GREY.astype(np.uint16) * 257).astype(">u2")), p.with_suffix(".tif")
        ),
    ),
    "32-bit integer TIFF": (
        GREY,
        lambda p: save(Image.fromarray(GREY.astype(np.int32) * 257), p.with_suffix(".tif")),
    ),
    "float TIFF in 0..1": (
        GREY,
        lambda p: save(Image.fromarray(GREY.astype(np.float32) / 255), p.with_suffix(".tif")),
    ),
    "16-bit grey+alpha PNG": (
        GREY,
        lambda p: write_png16(p, np.dstack([GREY, OPAQUE[..., 0]]).astype(np.uint16) * 257),
    ),
    "48-bit RGB PNG": (RGB, lambda p: write_png16(p, RGB.astype(np.uint16) * 257)),
    "64-bit RGBA PNG": (
        RGB,
        lambda p: write_png16(p, np.concatenate([RGB, OPAQUE], axis=2).astype(np.uint16) * 257),
    ),
    "8-bit palette PNG": (RGB, lambda p: save(Image.fromarray(RGB).quantize(256), p)),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_deep_images_read_as_their_eight_bit_originals(kind: str, tmp_path: Path) -> None:
    original, write = WRITERS[kind]
    path = write(tmp_path / "patch.png")
    expected = np.asarray(Image.fromarray(original).convert("RGB"))
    if kind == "8-bit palette PNG":  # a palette of 256 colours for 120 pixels: exact
        expected = np.asarray(Image.fromarray(original).quantize(256).convert("RGB"))
    decoded = np.asarray(load_rgb(path))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected)
    assert check_images(tmp_path, [path.name]) == []


def test_sixteen_bit_values_are_rounded_to_the_nearest_eight_bit_value(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 257, 32896, 65406, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "ramp.png")
    assert np.asarray(load_rgb(path))[0, :, 0].tolist() == [0, 0, 1, 1, 128, 254, 255]


UNFAITHFUL = {
    "CMYK JPEG": (
        lambda p: save(Image.fromarray(RGB).convert("CMYK"), p.with_suffix(".jpg")),
        "CMYK colour",
    ),
    "float TIFF beyond 1": (
        lambda p: save(Image.fromarray(GREY.astype(np.float32) / 100), p.with_suffix(".tif")),
        "floating-point values 0..2.4",
    ),
    "float TIFF with NaN": (
        lambda p: save(
            Image.fromarray(np.where(GREY > 128, np.nan, 0.5).astype(np.float32)),
            p.with_suffix(".tif"),
        ),
        "outside 0..1",
    ),
    "negative 32-bit integers": (
        lambda p: save(Image.fromarray(GREY.astype(np.int32) - 100), p.with_suffix(".tif")),
        "32-bit integer values -100..",
    ),
}


@pytest.mark.parametrize("kind", list(UNFAITHFUL))
def test_images_that_cannot_be_read_faithfully_are_refused_with_the_reason(
    kind: str, tmp_path: Path
) -> None:
    write, reason = UNFAITHFUL[kind]
    path = write(tmp_path / "patch.png")
    with pytest.raises(DataError, match="cannot be read faithfully") as error:
        load_rgb(path)
    assert reason in str(error.value)
    problems = check_images(tmp_path, [path.name])
    assert [(p.kind, p.fatal, p.count) for p in problems] == [("unfaithful", True, 1)]
    assert reason in problems[0].examples[0]
