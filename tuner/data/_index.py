"""The dataset index: every patch of the patch folder with its case, stain and slice.

Each patch path, relative to the root and written with ``/``, is matched in full against a
regular expression with the named groups ``case``, ``stain`` and ``slice`` (and optionally
``patch``). The default pattern accepts both layouts:

- folders: ``42/melan/3/17.png``
- flat names: ``42_melan_3_patch17.png``

Patches are kept in one canonical order (case, stain, slice, patch, with numbers compared as
numbers), which is also the row order of the feature store.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.data._files import IMAGE_SUFFIXES, ImageFiles, find_images
from tuner.data._labels import Labels, read_labels
from tuner.errors import DataError

__all__ = [
    "DEFAULT_PATTERN",
    "IMAGE_SUFFIXES",
    "DatasetIndex",
    "Patch",
    "Problem",
    "build_index",
    "compile_pattern",
    "group_ids",
    "natural_key",
    "scan_patches",
]

DEFAULT_PATTERN = (
    r"(?P<case>[^/_]+)[/_](?P<stain>[^/_]+)[/_](?P<slice>[^/_]+)[/_]"
    r"(?:patch[_-]?)?(?P<patch>[^/]+)\.\w+"
)
"""Default path pattern: ``CASE/STAIN/SLICE/PATCH.png`` or ``CASE_STAIN_SLICE_patchPATCH.png``."""

REQUIRED_GROUPS = ("case", "stain", "slice")

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``slice2`` before ``slice10``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text))


@dataclass(frozen=True)
class Patch:
    """One patch image: where it is (relative to the root) and where it belongs.

    The one row type of a patch: a row of the dataset index and of the feature store alike.
    """

    case: str
    stain: str
    slice: str
    patch: str
    path: str

    def sort_key(self) -> tuple[object, ...]:
        return (
            natural_key(self.case),
            natural_key(self.stain),
            natural_key(self.slice),
            natural_key(self.patch),
            self.path,
        )


def group_ids(*keys: np.ndarray | Sequence[str]) -> np.ndarray:
    """Number the runs of equal keys 0, 1, 2, ... along the rows: ``(n,)`` int64.

    Each of ``keys`` is a column of ``n`` values (ids or names); a row whose values all equal
    the previous row's gets its id, any other row the next one. In the canonical order (the
    index's, the store's) every group (a case, a case's stain, a stain's slice) is one run, so
    these are group ids.
    """
    columns = [np.asarray(k) for k in keys]
    n = len(columns[0]) if columns else 0
    ids = np.zeros(n, dtype=np.int64)
    if n > 1:
        new_run = np.zeros(n - 1, dtype=bool)
        for column in columns:
            new_run |= column[1:] != column[:-1]
        np.cumsum(new_run, out=ids[1:])
    return ids


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset. ``fatal`` problems make training impossible."""

    kind: str
    message: str
    examples: tuple[str, ...] = ()
    count: int = 0
    fatal: bool = False

    def describe(self, max_examples: int = 5) -> str:
        level = "error" if self.fatal else "warning"
        text = f"{level}: {self.message}"
        if self.examples:
            shown = ", ".join(self.examples[:max_examples])
            more = self.count - min(len(self.examples), max_examples)
            text += f": {shown}" + (f" (and {more} more)" if more > 0 else "")
        return text


@dataclass
class DatasetIndex:
    """The usable patches of a dataset (labelled cases only) and what is wrong with the rest."""

    root: Path
    pattern: str
    labels: Labels
    patches: list[Patch]
    problems: list[Problem] = field(default_factory=list)

    @property
    def cases(self) -> list[str]:
        """Labelled cases that have patches, in canonical order."""
        return list(dict.fromkeys(p.case for p in self.patches))

    @property
    def fatal_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    def patch_counts(self) -> dict[str, int]:
        """Number of patches per case."""
        return dict(Counter(p.case for p in self.patches))

    def case_labels(self) -> dict[str, int]:
        """Class index of each usable case."""
        return {case: self.labels.of_case[case] for case in self.cases}

    def raise_for_fatal(self) -> None:
        """Raise a :class:`DataError` naming the first fatal problem, if there is one."""
        fatal = self.fatal_problems
        if fatal:
            more = f" ({len(fatal) - 1} more problem(s): run 'tuner data check')" * (
                len(fatal) > 1
            )
            raise DataError(fatal[0].describe(max_examples=3).removeprefix("error: ") + more)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a path pattern and check that it has the required named groups."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DataError(
            f"pattern {pattern!r} is not a valid regular expression: {exc}", params=("pattern",)
        ) from None
    missing = [g for g in REQUIRED_GROUPS if g not in compiled.groupindex]
    if missing:
        raise DataError(
            f"pattern {pattern!r} lacks the named group(s) {', '.join(missing)}; write them as "
            "(?P<case>...), (?P<stain>...), (?P<slice>...)",
            params=("pattern",),
        )
    return compiled


def scan_patches(
    root: Path | str, pattern: str = DEFAULT_PATTERN
) -> tuple[list[Patch], list[str]]:
    """Find the image files under ``root`` (following links) and parse their paths.

    Returns the matching patches in canonical order, and the relative paths of the image files
    that do not match the pattern. Raises :class:`DataError` when the root is missing or holds
    no image files at all.
    """
    patches, unmatched, _ = _scan(Path(root), compile_pattern(pattern))
    return patches, unmatched


def _scan(root: Path, compiled: re.Pattern[str]) -> tuple[list[Patch], list[str], ImageFiles]:
    if not root.is_dir():
        raise DataError(
            f"patch folder {str(root)!r} does not exist; pass the folder that holds the patches"
        )
    files = find_images(root)
    patches: list[Patch] = []
    unmatched: list[str] = []
    for rel in files.paths:
        patch = _parse(rel, compiled)
        if patch is None:
            unmatched.append(rel)
        else:
            patches.append(patch)
    if not patches and not unmatched:
        raise DataError(
            f"patch folder {str(root)!r} holds no image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); point it at the folder of patch images"
        )
    patches.sort(key=Patch.sort_key)
    return patches, unmatched, files


def _parse(rel: str, compiled: re.Pattern[str]) -> Patch | None:
    match = compiled.fullmatch(rel)
    if match is None:
        return None
    groups = match.groupdict()
    patch_id = groups.get("patch") or Path(rel).stem
    return Patch(groups["case"], groups["stain"], groups["slice"], patch_id, rel)


def _link_problems(files: ImageFiles, compiled: re.Pattern[str]) -> list[Problem]:
    """What following links did: folders followed or skipped, files counted once, and (fatal)
    one file standing for patches of two cases, which would leak between the splits."""
    problems = []
    if files.followed:
        problems.append(Problem(
            "linked-folder",
            f"{len(files.followed)} folder(s) are symbolic links to folders outside the patch "
            "folder and were followed",
            tuple(files.followed[:20]), len(files.followed),
        ))  # fmt: skip
    if files.skipped:
        problems.append(Problem(
            "link-skipped",
            f"{len(files.skipped)} symbolic link(s) lead to a folder scanned anyway (inside the "
            "patch folder, or a loop) or nowhere, and were skipped",
            tuple(files.skipped[:20]), len(files.skipped),
        ))  # fmt: skip
    cases = {rel: getattr(_parse(rel, compiled), "case", None) for pair in files.duplicates
             for rel in pair}  # fmt: skip
    across = [f"{a} ~ {b}" for a, b in files.duplicates if cases[a] != cases[b]]
    within = [f"{a} ~ {b}" for a, b in files.duplicates if cases[a] == cases[b]]
    if within:
        problems.append(Problem(
            "linked-duplicate",
            f"{len(within)} image file(s) are the same file as another patch (a symbolic or "
            "hard link) and are counted once",
            tuple(within[:20]), len(within),
        ))  # fmt: skip
    if across:
        problems.append(Problem(
            "linked-across-cases",
            f"{len(across)} image file(s) are the same file as a patch of another case (a "
            "link); a patch must belong to one case (remove the links)",
            tuple(across[:20]), len(across), fatal=True,
        ))  # fmt: skip
    return problems


def build_index(
    root: Path | str,
    labels_path: Path | str,
    *,
    pattern: str = DEFAULT_PATTERN,
    case_column: str = "case",
    label_column: str = "label",
    classes: list[str] | None = None,
) -> DatasetIndex:
    """Scan the patch folder, read the labels, and list every problem found.

    Unlabelled cases are left out of the index (a warning); so are labels without patches.
    Fatal problems: no usable patch at all, fewer than two classes among the usable cases,
    two patch files that parse to the same case, stain, slice and patch, or one file (through
    links) standing for patches of two cases. Links followed or skipped, and files reached
    twice (counted once), are warnings.
    """
    root = Path(root)
    compiled = compile_pattern(pattern)
    patches, unmatched, files = _scan(root, compiled)
    labels = read_labels(
        labels_path, case_column=case_column, label_column=label_column, classes=classes
    )
    problems = _link_problems(files, compiled)
    if unmatched:
        problems.append(
            Problem(
                "unmatched",
                f"{len(unmatched)} image file(s) do not match the pattern and are ignored "
                "(fix their names or pass --pattern)",
                tuple(unmatched[:20]),
                len(unmatched),
                fatal=not patches,
            )
        )

    patch_cases = list(dict.fromkeys(p.case for p in patches))
    unlabelled = [c for c in patch_cases if c not in labels.of_case]
    if unlabelled:
        problems.append(
            Problem(
                "unlabelled",
                f"{len(unlabelled)} case(s) have patches but no label and are left out",
                tuple(unlabelled[:20]),
                len(unlabelled),
            )
        )
    with_patches = set(patch_cases)
    orphan_labels = sorted((c for c in labels.of_case if c not in with_patches), key=natural_key)
    if orphan_labels:
        problems.append(
            Problem(
                "no-patches",
                f"{len(orphan_labels)} labelled case(s) have no patches and are left out",
                tuple(orphan_labels[:20]),
                len(orphan_labels),
            )
        )

    usable = [p for p in patches if p.case in labels.of_case]
    duplicates = _duplicate_keys(usable)
    if duplicates:
        problems.append(
            Problem(
                "duplicate-patch",
                f"{len(duplicates)} patch(es) parse to the same case/stain/slice/patch as another "
                "file (fix the names or the pattern's patch group)",
                tuple(duplicates[:20]),
                len(duplicates),
                fatal=True,
            )
        )
    if patches and not usable:
        problems.append(
            Problem(
                "no-usable-cases",
                f"no case of {str(root)!r} has a label in {str(labels.path)!r}; check that the "
                "case ids in the paths and in the labels file agree",
                fatal=True,
            )
        )
    index = DatasetIndex(root, pattern, labels, usable, problems)
    present = {labels.classes[i] for i in index.case_labels().values()}
    if usable and len(present) < 2:
        problems.append(
            Problem(
                "one-class",
                f"the usable cases all belong to class {sorted(present)[0]!r}; "
                "a classifier needs cases of at least two classes",
                fatal=True,
            )
        )
    return index


def _duplicate_keys(patches: list[Patch]) -> list[str]:
    seen: dict[tuple[str, str, str, str], str] = {}
    duplicates: list[str] = []
    for p in patches:
        key = (p.case, p.stain, p.slice, p.patch)
        if key in seen:
            duplicates.append(f"{seen[key]} ~ {p.path}")
        else:
            seen[key] = p.path
    return duplicates
