"""``tuner data check`` and ``tuner data split`` as functions: check a dataset, split its cases.

:func:`check_dataset` builds the index, decodes every image (optionally) and adds the problems
that depend on the split; the :class:`DatasetCheck` it returns renders the summary and holds
the error that makes the dataset unusable for training, if any. :func:`split_dataset` splits
the cases of a patch folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tuner.data._images import check_images
from tuner.data._index import DEFAULT_PATTERN, DatasetIndex, build_index
from tuner.data._splits import Splits, make_splits
from tuner.data._summary import class_problems, summary_table
from tuner.errors import DataError

__all__ = ["DatasetCheck", "check_dataset", "split_dataset"]


@dataclass
class DatasetCheck:
    """A checked dataset: its index (with every problem found) and what they mean."""

    index: DatasetIndex

    def render(self, *, per_case: bool = True) -> str:
        """The counts per case, stain and slice, then one line per problem."""
        lines = [summary_table(self.index, per_case=per_case)]
        lines += [problem.describe() for problem in self.index.problems]
        return "\n".join(lines)

    @property
    def error(self) -> DataError | None:
        """Why the dataset cannot be used for training (its first fatal problem), or None."""
        fatal = self.index.fatal_problems
        if not fatal:
            return None
        more = f" (and {len(fatal) - 1} more, listed above)" if len(fatal) > 1 else ""
        return DataError(
            "the dataset cannot be used for training: "
            + fatal[0].describe(max_examples=2).removeprefix("error: ")
            + more
        )


def check_dataset(
    patches: Path,
    labels: Path,
    *,
    pattern: str | None = None,
    case_column: str = "case",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    folds: int | None = None,
    images: bool = True,
    progress: bool = False,
) -> DatasetCheck:
    """Check the dataset in ``patches`` with ``labels``: every problem, fatal or not.

    ``images`` decodes every image to find unreadable ones (with a progress bar if
    ``progress``); ``folds`` checks the classes for k folds instead of a 60/20/20 split.
    """
    index = build_index(
        patches, labels, pattern=pattern or DEFAULT_PATTERN, case_column=case_column,
        label_column=label_column, classes=list(classes) if classes is not None else None,
    )  # fmt: skip
    if images and index.patches:
        with tqdm(total=len(index.patches), unit="image", desc="checking images",
                  disable=None if progress else True) as bar:  # fmt: skip
            index.problems += check_images(
                index.root, [p.path for p in index.patches], progress=bar.update
            )
    index.problems += class_problems(index, folds)
    return DatasetCheck(index)


def split_dataset(
    patches: Path,
    labels: Path,
    *,
    pattern: str | None = None,
    case_column: str = "case",
    label_column: str = "label",
    seed: int = 0,
    folds: int | None = None,
    balance_patches: bool = False,
) -> Splits:
    """Split the cases of the dataset in ``patches`` (stratified by label; see
    :func:`make_splits`); a dataset with a fatal problem is a :class:`DataError`."""
    index = build_index(
        patches, labels, pattern=pattern or DEFAULT_PATTERN, case_column=case_column,
        label_column=label_column,
    )  # fmt: skip
    index.raise_for_fatal()
    return make_splits(
        index.case_labels(), seed=seed, folds=folds,
        patch_counts=index.patch_counts() if balance_patches else None,
        class_names=index.labels.classes,
    )  # fmt: skip
