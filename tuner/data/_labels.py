"""The labels CSV: one row per case, a case column and a label column."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import DataError

__all__ = ["Labels", "read_labels"]


@dataclass(frozen=True)
class Labels:
    """Case labels mapped to class indices.

    ``classes[i]`` is the name of class ``i``; ``of_case[case]`` is the class index of a case.
    Integer labels keep their numeric order, string labels are sorted alphabetically, unless
    ``classes`` is given explicitly to :func:`read_labels`.
    """

    path: Path
    classes: tuple[str, ...]
    of_case: dict[str, int]

    def count_by_class(self, cases: list[str] | None = None) -> dict[str, int]:
        """Number of cases per class name (all cases, or only those given)."""
        chosen = self.of_case if cases is None else {c: self.of_case[c] for c in cases}
        counts = Counter(chosen.values())
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}


def read_labels(
    path: Path | str,
    *,
    case_column: str = "case",
    label_column: str = "label",
    classes: list[str] | None = None,
) -> Labels:
    """Read a labels CSV and map its labels to class indices.

    Raises :class:`DataError` for a missing file, missing columns, empty cells, duplicate
    cases, labels outside an explicit ``classes`` list, or fewer than two classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"labels file {str(path)!r} not found; pass as labels a CSV that has "
            f"columns {case_column!r} and {label_column!r}",
            params=("labels",),
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"labels file {str(path)!r} is not a readable CSV: {exc}") from None
    for column, option in ((case_column, "--case-column"), (label_column, "--label-column")):
        if column not in columns:
            raise DataError(
                f"labels file {str(path)!r} has no column {column!r} (its columns: "
                f"{', '.join(columns) or 'none'}); name the right one with {option}"
            )
    if not rows:
        raise DataError(f"labels file {str(path)!r} has no rows; add one row per case")

    raw: dict[str, str] = {}
    duplicates: list[str] = []
    for line, row in enumerate(rows, start=2):
        case, label = row[case_column], row[label_column]
        if not case or not label:
            raise DataError(
                f"labels file {str(path)!r} line {line} has an empty {case_column!r} or "
                f"{label_column!r} cell; fill it in or delete the row"
            )
        if case in raw:
            duplicates.append(case)
        raw[case] = label
    if duplicates:
        shown = ", ".join(sorted(set(duplicates))[:5])
        raise DataError(
            f"labels file {str(path)!r} lists {len(set(duplicates))} case(s) more than once "
            f"({shown}); keep one row per case"
        )

    if classes is None and all(_is_int(v) for v in raw.values()):
        raw = {case: str(int(label)) for case, label in raw.items()}
    names = _class_names(set(raw.values()), classes, path)
    index = {name: i for i, name in enumerate(names)}
    return Labels(path=path, classes=names, of_case={c: index[v] for c, v in raw.items()})


def _class_names(seen: set[str], explicit: list[str] | None, path: Path) -> tuple[str, ...]:
    if explicit is not None:
        unknown = sorted(seen - set(explicit))
        if unknown:
            raise DataError(
                f"labels file {str(path)!r} has labels {unknown} that are not among the classes "
                f"{explicit}; add them to classes or fix the labels",
                params=("classes",),
            )
        names = list(explicit)
    elif all(_is_int(v) for v in seen):
        names = sorted(seen, key=int)
    else:
        names = sorted(seen)
    if len(seen) < 2:
        raise DataError(
            f"labels file {str(path)!r} has only one class ({sorted(seen)[0]!r}); "
            "a classifier needs cases of at least two classes"
        )
    return tuple(names)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
