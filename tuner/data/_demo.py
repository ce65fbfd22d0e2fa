"""A small synthetic dataset in the real layout, with an honest multiple-instance signal.

``DIR/patches/CASE/STAIN/SLICE/PATCH.png``, ``DIR/labels.csv`` (``case,label`` with
``benign`` / ``high_grade``) and ``DIR/lesions.csv`` (the ground truth: the path of every
lesion patch, for checking where a model attends). Every case has up to three stains (H&E,
Melan-A, SOX10), a few tissue slices per stain, and a dozen or so patches per slice.

The class signal is carried by a minority of patches: a high-grade case holds lesion patches
in some slices of some of its stains. Benign cases hold none. Both classes share the nuisance
that makes averaging all patches a poor detector: benign nevus nests (small, regular
melanocytes in the same colours as a lesion), stain intensity per slice, cellularity, blank
background and dense inflammatory patches. A :class:`DemoSpec` holds every knob; two presets:

- ``default`` (the quickstart's): lesions (large atypical nuclei in H&E, large red cells in
  Melan-A, large brown nuclei in SOX10) in 5-10% of a positive case's patches, in one or two
  stains. An attention model finds them: on 100 cases, 5-fold cross-validation gave a test AUC
  of 1.00 with attention and 0.82-0.85 with mean pooling (docs/results.md).
- ``hard`` (for benchmarks of tuning): 90 cases of 32 px patches, lesions in 3-8% of the
  patches, in one stain that is most often SOX10; look-alike patches (a few enlarged benign
  cells) in every case; stains missing more often, more staining variation per slice, and 5%
  of the labels flipped. ``truth.csv`` holds the true labels and ``lookalikes.csv`` the
  look-alike patches. Its knobs were calibrated so that the learning rate matters and five
  times the data helps (docs/results.md, "The hard demo").

An independent population for external validation is the same spec with another ``seed`` and
``case_prefix``: the seed decides every image, the prefix only names the cases.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.data._demo_render import STAINS, render_patch
from tuner.errors import DataError

__all__ = ["DEMO_PRESETS", "DemoSpec", "write_demo_dataset"]

# Entropy word that separates the label-noise stream from the cases' streams of a seed.
_LABEL_NOISE_STREAM = 0x4E4F4953


@dataclass(frozen=True)
class DemoSpec:
    """Everything that decides a demo dataset; the same spec always gives the same files.

    Ranges are ``(low, high)``, drawn per case (shares) or per slice (counts).
    """

    cases: int = 100
    image_size: int = 64
    slices: tuple[int, int] = (2, 4)
    patches_per_slice: tuple[int, int] = (8, 16)
    seed: int = 0
    case_prefix: str = "C"
    #: chance that each stain of a case is present (a case keeps at least H&E)
    stain_presence: float = 0.85
    #: share of a positive case's patches that are lesions
    lesion_share: tuple[float, float] = (0.05, 0.10)
    #: weights of H&E, Melan-A and SOX10 for the one stain that carries a positive case's
    #: lesions (among its present stains); None: one or two stains, uniformly
    lesion_stains: tuple[float, float, float] | None = None
    #: chance that each slice of a lesion stain after its first holds lesions
    lesion_slices: float = 0.7
    #: share of every case's patches showing a few enlarged but benign cells
    lookalike_share: tuple[float, float] = (0.0, 0.0)
    #: enlarged cells in a look-alike patch
    lookalike_cells: tuple[int, int] = (3, 7)
    #: how large a look-alike's cells are: 0 like a normal melanocyte, 1 like a lesion's
    lookalike_resemblance: float = 0.3
    #: share of a case's patches that are benign nevus nests
    nevus_share: tuple[float, float] = (0.0, 0.4)
    #: per slice, the standard deviation of each colour channel's and of the overall staining
    stain_variation: tuple[float, float] = (0.025, 0.05)
    #: share of the cases whose label in labels.csv is flipped (truth.csv has the truth)
    label_noise: float = 0.0

    def check(self) -> None:
        """Raise :class:`DataError` naming the first impossible value."""
        if self.cases < 6:
            raise DataError(f"cases must be at least 6 (three per class), but got {self.cases}")
        if self.image_size < 32:
            # DenseNet121 pools a 32 px patch down to one pixel; smaller ones cannot be encoded
            raise DataError(f"image_size must be at least 32 pixels, but got {self.image_size}")
        if not re.fullmatch(r"[A-Za-z]+", self.case_prefix):
            raise DataError(
                f"case_prefix must be letters only (a digit would let ids of two prefixes "
                f"collide), but got {self.case_prefix!r}"
            )
        for name in ("slices", "patches_per_slice", "lookalike_cells"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise DataError(f"{name} must be a range 1 <= low <= high, but got {(low, high)}")
        for name in ("lesion_share", "lookalike_share", "nevus_share"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 1:
                raise DataError(f"{name} must be shares 0 <= low <= high <= 1, got {(low, high)}")
        for name in ("stain_presence", "lesion_slices", "lookalike_resemblance"):
            if not 0 <= getattr(self, name) <= 1:
                raise DataError(f"{name} must be in [0, 1], but got {getattr(self, name)}")
        if not 0 <= self.label_noise < 0.5:
            raise DataError(f"label_noise must be in [0, 0.5), but got {self.label_noise}")
        if self.lesion_stains is not None and (
            len(self.lesion_stains) != len(STAINS)
            or min(self.lesion_stains) < 0
            or sum(self.lesion_stains) <= 0
        ):
            raise DataError(
                f"lesion_stains must be three weights >= 0 (H&E, Melan-A, SOX10) with a positive "
                f"sum, but got {self.lesion_stains}"
            )

    def case_ids(self) -> list[str]:
        return [f"{self.case_prefix}{number:03d}" for number in range(1, self.cases + 1)]


DEMO_PRESETS: dict[str, DemoSpec] = {
    "default": DemoSpec(),
    "hard": DemoSpec(
        cases=90,
        image_size=32,
        stain_presence=0.75,
        lesion_share=(0.03, 0.08),
        lesion_stains=(0.2, 0.3, 0.5),
        lesion_slices=0.6,
        lookalike_share=(0.01, 0.05),
        lookalike_cells=(3, 7),
        lookalike_resemblance=0.3,
        stain_variation=(0.04, 0.08),
        label_noise=0.05,
    ),
}


def write_demo_dataset(
    out: Path | str,
    spec: DemoSpec | None = None,
    *,
    cases: int | None = None,
    seed: int | None = None,
    image_size: int | None = None,
    slices: tuple[int, int] | None = None,
    patches_per_slice: tuple[int, int] | None = None,
    case_prefix: str | None = None,
) -> Path:
    """Write the demo dataset of ``spec`` (the default preset when None) under ``out``, with
    the given fields replaced, and return the path of its labels CSV.

    The same spec always gives the same files. Refuses a non-empty ``out``.
    """
    given: dict[str, Any] = {
        "cases": cases, "seed": seed, "image_size": image_size, "slices": slices,
        "patches_per_slice": patches_per_slice, "case_prefix": case_prefix,
    }  # fmt: skip
    spec = dataclasses.replace(
        spec or DEMO_PRESETS["default"], **{k: v for k, v in given.items() if v is not None}
    )
    spec.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"demo folder {str(out)!r} is not empty; choose a new folder")
    patches_root = out / "patches"
    rows: list[tuple[str, str]] = []
    truth: list[tuple[str, str, str]] = []
    lesions: list[str] = []
    lookalikes: list[str] = []
    flipped = _flipped_cases(spec)
    children = np.random.SeedSequence(spec.seed).spawn(spec.cases)
    for number, (case, child) in enumerate(zip(spec.case_ids(), children, strict=True), start=1):
        positive = number % 2 == 0
        kinds = _write_case(patches_root, case, np.random.default_rng(child), positive, spec)
        lesions += kinds.get("lesion", [])
        lookalikes += kinds.get("lookalike", [])
        label = "high_grade" if positive else "benign"
        shown = ("benign" if positive else "high_grade") if number in flipped else label
        rows.append((case, shown))
        truth.append((case, label, str(int(number in flipped))))
    _write_csv(out / "lesions.csv", ["path"], [(p,) for p in lesions])
    if spec.lookalike_share[1] > 0:
        _write_csv(out / "lookalikes.csv", ["path"], [(p,) for p in lookalikes])
    if spec.label_noise > 0:
        _write_csv(out / "truth.csv", ["case", "true_label", "flipped"], truth)
    labels = out / "labels.csv"
    _write_csv(labels, ["case", "label"], rows)
    return labels


def _flipped_cases(spec: DemoSpec) -> set[int]:
    """Numbers (from 1) of the cases whose label is flipped: a random ``label_noise`` share."""
    if spec.label_noise == 0:
        return set()
    rng = np.random.default_rng([_LABEL_NOISE_STREAM, spec.seed])
    count = int(spec.label_noise * spec.cases + 0.5)
    return {int(i) + 1 for i in rng.choice(spec.cases, size=count, replace=False)}


def _write_csv(path: Path, header: list[str], rows: Sequence[tuple[str, ...]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_case(
    root: Path, case: str, rng: np.random.Generator, positive: bool, spec: DemoSpec
) -> dict[str, list[str]]:
    """Write one case's patches; return the relative paths of its patches by kind.

    Every knob at its default draws exactly the random numbers the first demo did (the
    quickstart's and the tests' files stay byte-identical): a draw that only a non-default knob
    needs is skipped otherwise.
    """
    present = [s for s in STAINS if rng.random() < spec.stain_presence] or [STAINS[0]]
    layout = {
        stain: [
            int(rng.integers(spec.patches_per_slice[0], spec.patches_per_slice[1] + 1))
            for _ in range(int(rng.integers(spec.slices[0], spec.slices[1] + 1)))
        ]
        for stain in present
    }
    lesions = _lesion_plan(layout, rng, spec) if positive else {}
    inflamed = rng.uniform(0.0, 0.2)
    nevus = rng.uniform(*spec.nevus_share)
    lookalike = rng.uniform(*spec.lookalike_share) if spec.lookalike_share[1] > 0 else 0.0
    colour_sd, intensity_sd = spec.stain_variation
    written: dict[str, list[str]] = {}
    for stain, sizes in layout.items():
        for slice_number, n_patches in enumerate(sizes, start=1):
            directory = root / case / stain / str(slice_number)
            directory.mkdir(parents=True, exist_ok=True)
            tint = rng.normal(1.0, colour_sd, size=3) * rng.normal(1.0, intensity_sd)
            lesion_patches = lesions.get((stain, slice_number), set())
            for patch_number in range(1, n_patches + 1):
                kind = (
                    "lesion"
                    if patch_number in lesion_patches
                    else "lookalike"
                    if lookalike > 0 and rng.random() < lookalike
                    else "nevus"
                    if rng.random() < nevus
                    else "inflamed"
                    if rng.random() < inflamed
                    else "blank"
                    if rng.random() < 0.08
                    else "normal"
                )
                image = render_patch(
                    stain, kind, tint, rng, spec.image_size, cells=spec.lookalike_cells,
                    resemblance=spec.lookalike_resemblance,
                )  # fmt: skip
                path = directory / f"{patch_number:03d}.png"
                image.save(path, optimize=False)
                written.setdefault(kind, []).append(path.relative_to(root).as_posix())
    return written


def _lesion_plan(
    layout: dict[str, list[int]], rng: np.random.Generator, spec: DemoSpec
) -> dict[tuple[str, int], set[int]]:
    """Choose lesion patches: the first slice and some others of the lesion stain(s), a
    ``lesion_share`` of all the case's patches (at least one)."""
    total = sum(sum(sizes) for sizes in layout.values())
    target = max(1, round(total * rng.uniform(*spec.lesion_share)))
    stains = list(layout)
    if spec.lesion_stains is None:
        chosen = rng.choice(stains, size=min(len(stains), int(rng.integers(1, 3))), replace=False)
    else:
        weights = np.array([spec.lesion_stains[STAINS.index(s)] for s in stains], float)
        # all present stains weighted 0 (the weighted one is missing): any of them
        chosen = rng.choice(stains, size=1, p=weights / weights.sum() if weights.any() else None)
    candidates = [
        (str(stain), number, n)
        for stain in chosen
        for number, n in enumerate(layout[str(stain)], start=1)
        if rng.random() < spec.lesion_slices or number == 1
    ]
    plan: dict[tuple[str, int], set[int]] = {}
    slots = [(stain, number, p) for stain, number, n in candidates for p in range(1, n + 1)]
    picks = rng.choice(len(slots), size=min(target, len(slots)), replace=False)
    for i in picks:
        stain, number, patch = slots[int(i)]
        plan.setdefault((stain, number), set()).add(patch)
    return plan
