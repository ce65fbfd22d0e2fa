"""The human-readable summary of a dataset index, and the checks that depend on the split."""

from __future__ import annotations

from collections import defaultdict

from tuner.data._index import DatasetIndex, Problem, natural_key
from tuner.data._splits import min_cases_per_class

__all__ = ["class_problems", "summary_table"]


def class_problems(index: DatasetIndex, folds: int | None = None) -> list[Problem]:
    """A fatal problem for each class with fewer usable cases than the split needs."""
    need = min_cases_per_class(folds)
    what = f"{folds} folds" if folds else "a 60/20/20 split"
    counts = index.labels.count_by_class(index.cases)
    return [
        Problem(
            "small-class",
            f"class {name!r} has {n} usable case(s) but {what} needs at least {need}",
            fatal=True,
        )
        for name, n in counts.items()
        if n < need
    ]


def summary_table(index: DatasetIndex, *, per_case: bool = True) -> str:
    """Counts per stain and (optionally) per case: slices/patches in each stain."""
    stains = sorted({p.stain for p in index.patches}, key=natural_key)
    slices: dict[tuple[str, str], set[str]] = defaultdict(set)
    patches: dict[tuple[str, str], int] = defaultdict(int)
    for p in index.patches:
        slices[(p.case, p.stain)].add(p.slice)
        patches[(p.case, p.stain)] += 1
    cases = index.cases
    n_slices = sum(len(s) for s in slices.values())
    by_class = ", ".join(f"{k} {v}" for k, v in index.labels.count_by_class(cases).items())
    lines = [
        f"dataset {index.root}: {len(cases)} cases, {len(stains)} stains, {n_slices} slices, "
        f"{len(index.patches)} patches; classes: {by_class}",
        "",
        f"{'stain':<12}{'cases':>8}{'slices':>8}{'patches':>9}",
    ]
    for stain in stains:
        keys = [k for k in slices if k[1] == stain]
        lines.append(
            f"{stain:<12}{len(keys):>8}{sum(len(slices[k]) for k in keys):>8}"
            f"{sum(patches[k] for k in keys):>9}"
        )
    if per_case:
        width = max([len(c) for c in cases] + [4]) + 2
        label_width = max(len(c) for c in index.labels.classes) + 2
        header = f"{'case':<{width}}{'label':<{label_width}}"
        header += "".join(f"{s + ' sl/pt':>14}" for s in stains) + f"{'patches':>9}"
        lines += ["", header]
        for case in cases:
            label = index.labels.classes[index.labels.of_case[case]]
            cells = "".join(f"{_cell(slices, patches, case, s):>14}" for s in stains)
            total = sum(patches[(case, s)] for s in stains)
            lines.append(f"{case:<{width}}{label:<{label_width}}{cells}{total:>9}")
    return "\n".join(lines)


def _cell(
    slices: dict[tuple[str, str], set[str]],
    patches: dict[tuple[str, str], int],
    case: str,
    stain: str,
) -> str:
    """``slices/patches`` of a case in a stain, or ``-`` when the case lacks the stain."""
    key = (case, stain)
    return f"{len(slices[key])}/{patches[key]}" if key in slices else "-"
