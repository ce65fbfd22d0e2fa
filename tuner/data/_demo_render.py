"""Drawing one synthetic patch of the demo dataset: tissue, nuclei and the kind of the patch.

Kinds: ``normal`` tissue, ``blank`` background, ``inflamed`` (dense small dark nuclei),
``nevus`` (a benign nest of small regular melanocytes in the colour of a lesion), ``lesion``
(many large atypical cells) and ``lookalike`` (benign: normal tissue with a few enlarged
cells in the lesion's colour; how large is ``resemblance``: 0 = like a normal melanocyte,
1 = like a lesion's cell).

Colours per stain: H&E shows nuclei in purple, Melan-A melanocytes in red chromogen, SOX10
melanocyte nuclei in brown (DAB). Sizes are given for a 64 px patch and scaled to ``size``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["KINDS", "STAINS", "render_patch"]

STAINS = ("HE", "MelanA", "SOX10")
KINDS = ("normal", "blank", "inflamed", "nevus", "lesion", "lookalike")
Color = tuple[float, float, float]

# Background tissue colour and the colour of a normal nucleus, per stain.
_TISSUE: dict[str, Color] = {
    "HE": (232, 178, 206),
    "MelanA": (222, 218, 232),
    "SOX10": (220, 216, 230),
}
_NUCLEUS: dict[str, Color] = {"HE": (92, 52, 128), "MelanA": (96, 92, 150), "SOX10": (96, 92, 150)}
_DAB: Color = (122, 74, 38)  # brown chromogen
_RED: Color = (176, 54, 60)  # red chromogen (Melan-A)

# Radius range of a cell in a 64 px patch, per stain: a normal nucleus or melanocyte, and a
# lesion's atypical cell. A look-alike's lies between, by its resemblance.
_NORMAL_CELL: dict[str, tuple[float, float]] = {
    "HE": (1.4, 2.6),
    "MelanA": (1.4, 2.2),
    "SOX10": (1.4, 2.2),
}
_LESION_CELL: dict[str, tuple[float, float]] = {
    "HE": (3.5, 5.5),
    "MelanA": (4.0, 7.0),
    "SOX10": (2.6, 3.6),
}


def render_patch(
    stain: str,
    kind: str,
    tint: np.ndarray,
    rng: np.random.Generator,
    size: int,
    *,
    cells: tuple[int, int] = (3, 7),
    resemblance: float = 0.0,
) -> Image.Image:
    """One patch of ``kind`` in ``stain``; ``tint`` scales its colours (the slice's staining).

    ``cells`` is the range of the number of a look-alike's enlarged cells, ``resemblance`` how
    large they are.
    """
    scale = size / 64
    base = np.array(_TISSUE[stain]) * tint
    if kind == "blank":
        base = base + (255 - base) * 0.75
    coarse = Image.fromarray(
        rng.normal(128, 40, size=(size // 8, size // 8)).clip(0, 255).astype(np.uint8)
    )
    smooth = (np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), float) - 128) / 40
    pixels = base * (1 + 0.05 * smooth[..., None]) + rng.normal(0, 4, (size, size, 3))
    pixels = np.clip(pixels, 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    nucleus = tuple(np.array(_NUCLEUS[stain]) * tint)
    marker = tuple(c * 0.65 for c in nucleus) if stain == "HE" else _marker(stain)

    def blobs(count: int, radius: tuple[float, float], color: Color, jitter: float = 12) -> None:
        for _ in range(count):
            x, y = rng.uniform(0, size, 2)
            rx, ry = rng.uniform(*radius, 2) * scale
            # min/max rather than np.clip: the same values, a tenth of the time
            shade = tuple(int(min(max(c + rng.normal(0, jitter), 0.0), 255.0)) for c in color)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=shade)

    if kind == "blank":
        blobs(int(rng.integers(0, 4)), (1.2, 2.2), nucleus)
    elif kind == "inflamed":
        blobs(int(rng.integers(50, 90)), (1.0, 1.8), tuple(c * 0.7 for c in nucleus))
    else:
        blobs(int(rng.integers(10, 35)), (1.4, 2.6), nucleus)
        if stain != "HE" and rng.random() < 0.3:  # a few normal melanocytes
            blobs(int(rng.integers(1, 3)), (1.4, 2.2), _DAB if stain == "SOX10" else _RED)
    if kind == "nevus":  # benign nests of small, regular melanocytes: colour like a lesion
        colour = tuple(c * 0.75 for c in nucleus) if stain == "HE" else _marker(stain)
        cx, cy = rng.uniform(size * 0.25, size * 0.75, 2)
        for _ in range(int(rng.integers(10, 20))):
            x, y = cx + rng.normal(0, size / 8), cy + rng.normal(0, size / 8)
            r = rng.uniform(1.8, 2.6) * scale
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in colour))
    if kind == "lesion":
        radius = _LESION_CELL[stain]
        if stain == "HE":
            blobs(int(rng.integers(8, 14)), radius, marker, 18)
            blobs(int(rng.integers(6, 10)), (0.8, 1.2), (60, 20, 60))  # prominent nucleoli
        elif stain == "MelanA":
            blobs(int(rng.integers(8, 14)), radius, marker, 20)
        else:
            blobs(int(rng.integers(14, 24)), radius, marker, 16)
    elif kind == "lookalike":
        low, high = (
            n + resemblance * (a - n)
            for n, a in zip(_NORMAL_CELL[stain], _LESION_CELL[stain], strict=True)
        )
        blobs(int(rng.integers(cells[0], cells[1] + 1)), (low, high), marker)
    return image.filter(ImageFilter.GaussianBlur(0.6 * scale))


def _marker(stain: str) -> Color:
    return _DAB if stain == "SOX10" else _RED
