"""Case-level splits: stratified by label, optionally balanced by patch count, seeded.

Two schemes:

- ``holdout``: one train/val/test split (60/20/20 by default). Each stratum is cut by the
  fractions with the rounding spread so that every class of three or more cases appears in
  every part; scikit-learn's ``train_test_split`` leaves a small class out of val or test
  (27 negatives and 3 positives: no positive in val or test for many seeds), and a test set
  without positives has no AUC.
- ``kfold``: ``k`` folds from scikit-learn's ``StratifiedKFold``; fold ``i`` tests on part
  ``i``, validates on part ``i + 1`` (mod k) and trains on the rest, so every case is tested
  exactly once.
- ``cv``: the test cases are held out once (the holdout's test share with the same seed, or a
  given list), the others are cut into ``k`` stratified folds; split ``i`` validates on fold
  ``i``, trains on the rest and tests on the held-out cases, the same in every split. A study
  cross-validates on them without ever seeing the test cases.

With ``balance_patches`` the strata are label x quantile bin of the patch count per case (as the
cellmil k-fold does for cell counts), so that no split gets all the large cases. Bins are
merged when a stratum is too small to be spread over the splits.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuner._files import write_atomic
from tuner.errors import DataError

__all__ = ["Split", "Splits", "load_splits", "make_splits", "min_cases_per_class"]

logger = logging.getLogger(__name__)

Scheme = Literal["holdout", "kfold", "cv"]


@dataclass(frozen=True)
class Split:
    """The case ids of one train/val/test partition."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Splits:
    """One split (holdout) or ``k`` of them (k-fold), with how they were made."""

    scheme: Scheme
    seed: int
    fractions: tuple[float, float, float] | None
    folds: int | None
    balance_patches: bool
    splits: tuple[Split, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["splits"] = [{k: list(v) for k, v in s.parts().items()} for s in self.splits]
        return data

    def save(self, path: Path | str) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Splits:
        fractions = data.get("fractions")
        return cls(
            scheme=data["scheme"],
            seed=int(data["seed"]),
            fractions=tuple(fractions) if fractions else None,
            folds=data.get("folds"),
            balance_patches=bool(data.get("balance_patches", False)),
            splits=tuple(
                Split(tuple(s["train"]), tuple(s["val"]), tuple(s["test"])) for s in data["splits"]
            ),
        )


def load_splits(path: Path | str) -> Splits:
    """Read splits saved by :meth:`Splits.save`."""
    path = Path(path)
    try:
        return Splits.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataError(f"splits file {str(path)!r} not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"splits file {str(path)!r} is malformed ({exc})") from None


def min_cases_per_class(folds: int | None) -> int:
    """The fewest cases a class needs: one per split part, or one per fold."""
    return 3 if folds is None else max(folds, 3)


def make_splits(
    labels: dict[str, int],
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    folds: int | None = None,
    patch_counts: dict[str, int] | None = None,
    bins: int = 4,
    class_names: tuple[str, ...] | None = None,
    cv_folds: int | None = None,
    test: tuple[str, ...] | None = None,
) -> Splits:
    """Split cases (``labels``: case -> class index) into train/val/test, stratified by label.

    ``folds``: make k folds instead of one holdout split. ``cv_folds``: hold the test cases
    out (``test``, or the holdout's test share) and cut the others into k folds (scheme
    ``cv``). ``patch_counts``: also balance the splits by patches per case, using up to
    ``bins`` quantile bins. The result depends only on the cases, labels, counts and ``seed``,
    never on the order of ``labels``.
    """
    if cv_folds is not None:
        return _cv_splits(labels, seed, fractions, cv_folds, patch_counts, bins, class_names, test)
    _check_arguments(labels, fractions, folds, class_names)
    cases = sorted(labels)
    y = np.array([labels[c] for c in cases])
    counts = None if patch_counts is None else np.array([patch_counts[c] for c in cases])
    needed = 2 if folds is None else folds
    strata = _strata(y, counts, bins, needed)
    splits: tuple[Split, ...]
    if folds is None:
        parts = _holdout(strata, fractions, np.random.default_rng(seed))
        splits = (_to_split(cases, parts),)
    else:
        assignment = _fold_assignment(strata, folds, seed)
        splits = tuple(
            _to_split(
                cases,
                np.where(assignment == i, 2, np.where(assignment == (i + 1) % folds, 1, 0)),
            )
            for i in range(folds)
        )
    return Splits(
        scheme="holdout" if folds is None else "kfold",
        seed=seed,
        fractions=fractions if folds is None else None,
        folds=folds,
        balance_patches=patch_counts is not None,
        splits=splits,
    )


def _cv_splits(
    labels: dict[str, int],
    seed: int,
    fractions: tuple[float, float, float],
    k: int,
    patch_counts: dict[str, int] | None,
    bins: int,
    class_names: tuple[str, ...] | None,
    test: tuple[str, ...] | None,
) -> Splits:
    if test is None:
        holdout = make_splits(
            labels, seed=seed, fractions=fractions, patch_counts=patch_counts, bins=bins,
            class_names=class_names,
        )  # fmt: skip
        test = holdout.splits[0].test
    held_out = set(test)
    rest = {c: y for c, y in labels.items() if c not in held_out}
    for cls, n in sorted(Counter(rest.values()).items()):
        if n < k:
            name = class_names[cls] if class_names else str(cls)
            raise DataError(
                f"data.split.cv_folds is {k} but class {name!r} has only {n} case(s) outside "
                f"the test split; use at most {n} folds or add cases"
            )
    if len(set(rest.values())) < 2:
        raise DataError("the cases outside the test split all have the same label")
    cases = sorted(rest)
    y = np.array([rest[c] for c in cases])
    counts = None if patch_counts is None else np.array([patch_counts[c] for c in cases])
    assignment = _fold_assignment(_strata(y, counts, bins, k), k, seed)
    ordered = tuple(sorted(test))
    splits = tuple(
        Split(
            tuple(c for c, a in zip(cases, assignment, strict=True) if a != i),
            tuple(c for c, a in zip(cases, assignment, strict=True) if a == i),
            ordered,
        )
        for i in range(k)
    )
    return Splits("cv", seed, fractions, k, patch_counts is not None, splits)


def _check_arguments(
    labels: dict[str, int],
    fractions: tuple[float, float, float],
    folds: int | None,
    class_names: tuple[str, ...] | None,
) -> None:
    if folds is not None and folds < 2:
        raise DataError(f"folds must be at least 2, but got {folds=}")
    if folds is None and (
        len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6
    ):
        raise DataError(
            f"split fractions must be three positive numbers summing to 1, but got {fractions}"
        )
    need = min_cases_per_class(folds)
    what = f"{folds} folds" if folds else "a train/val/test split"
    for cls, n in sorted(Counter(labels.values()).items()):
        if n < need:
            name = class_names[cls] if class_names else str(cls)
            raise DataError(
                f"class {name!r} has {n} case(s) but {what} needs at least {need} per class; "
                "add cases" + (" or use fewer folds" if folds else "")
            )
    if len(set(labels.values())) < 2:
        raise DataError("all cases have the same label; splits need at least two classes")


def _strata(y: np.ndarray, counts: np.ndarray | None, bins: int, needed: int) -> np.ndarray:
    """Label x patch-count bin, with the bins reduced until every stratum has ``needed`` cases."""
    if counts is None:
        return y
    for n_bins in range(bins, 0, -1):
        strata = y * n_bins
        for cls in np.unique(y):
            mine = y == cls
            edges = np.quantile(counts[mine], np.linspace(0, 1, n_bins + 1)[1:-1])
            strata[mine] += np.searchsorted(edges, counts[mine], side="right")
        if min(Counter(strata.tolist()).values()) >= needed:
            if n_bins < bins:
                logger.info("balancing by patch count with %d bins instead of %d", n_bins, bins)
            return strata
    return y


def _holdout(
    strata: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Assign 0/1/2 (train/val/test) per case, proportionally within each stratum.

    Each stratum is shuffled and cut by its cumulative fractions; the rounding remainder is
    spread so that the overall sizes stay close to the fractions and, for every stratum of at
    least three cases, each part gets at least one case.
    """
    parts = np.zeros(len(strata), dtype=np.int64)
    carry = np.zeros(3)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        n = len(members)
        want = np.array(fractions) * n + carry
        floor = 1 if n >= 3 else 0
        sizes = np.maximum(np.floor(want).astype(int), floor)
        while sizes.sum() > n:
            excess = np.where(sizes > floor, sizes - want, -np.inf)
            sizes[np.argmax(excess)] -= 1
        while sizes.sum() < n:
            sizes[np.argmax(want - sizes)] += 1
        carry = want - sizes
        parts[members] = np.repeat([0, 1, 2], sizes)
    return parts


def _fold_assignment(strata: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each case, from scikit-learn's StratifiedKFold."""
    from sklearn.model_selection import StratifiedKFold

    assignment = np.zeros(len(strata), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(strata)), strata)):
        assignment[test] = fold
    return assignment


def _to_split(cases: list[str], parts: np.ndarray) -> Split:
    chosen = [tuple(c for c, p in zip(cases, parts, strict=True) if p == k) for k in range(3)]
    return Split(*chosen)
