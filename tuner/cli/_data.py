"""``tuner demo-data`` and ``tuner data check|split``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tuner.cli._options import PATH, dataset_options, parse_classes, progress_enabled

logger = logging.getLogger("tuner.cli")


@click.command("demo-data")
@click.argument("out", type=PATH)
@click.option(
    "--difficulty", type=click.Choice(["default", "hard"]), default="default", show_default=True,
    help="default: the quickstart's; hard: lesions in 3-8% of the patches, mostly in one "
    "stain, look-alikes, missing stains, 5% of the labels flipped (truth.csv has the truth).",
)  # fmt: skip
@click.option("--cases", type=int, default=None, help="Cases, half of them high grade "
              "[default: 100; hard: 90].")  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="The same seed gives the same files.")
@click.option("--image-size", type=int, default=None, help="Patch size in pixels "
              "[default: 64; hard: 32].")  # fmt: skip
@click.option(
    "--case-prefix", default="C", show_default=True,
    help="Letters before each case number. For an independent population of the same "
    "generator, give another seed and prefix (e.g. --seed 1000 --case-prefix P).",
)  # fmt: skip
def demo_data(
    out: Path,
    difficulty: str,
    cases: int | None,
    seed: int,
    image_size: int | None,
    case_prefix: str,
) -> None:
    """Write a small synthetic dataset (patches + labels.csv) to the new folder OUT."""
    from tuner.data import DEMO_PRESETS, write_demo_dataset

    spec = DEMO_PRESETS[difficulty]
    labels = write_demo_dataset(
        out, spec, cases=cases, seed=seed, image_size=image_size, case_prefix=case_prefix
    )
    logger.info("wrote %d demo cases to %s", cases or spec.cases, out)
    click.echo(f"patches: {out / 'patches'}\nlabels:  {labels}")
    if (out / "truth.csv").is_file():
        click.echo(f"truth:   {out / 'truth.csv'} (the true labels; labels.csv has noise)")


@click.group()
def data() -> None:
    """Check a dataset and split its cases."""


@data.command()
@click.argument("patches", type=PATH)
@dataset_options
@click.option("--folds", type=int, default=None, help="Check for k folds instead of 60/20/20.")
@click.option(
    "--images/--no-images", default=True, show_default=True,
    help="Decode every image to find unreadable ones.",
)  # fmt: skip
@click.option("--cases/--no-cases", default=True, show_default=True, help="One line per case.")
def check(
    patches: Path,
    labels: Path,
    pattern: str | None,
    case_column: str,
    label_column: str,
    classes: str | None,
    folds: int | None,
    images: bool,
    cases: bool,
) -> None:
    """Validate the dataset in PATCHES: counts per case, stain and slice, and every problem."""
    from tqdm import tqdm

    from tuner.data import (
        DEFAULT_PATTERN,
        build_index,
        check_images,
        class_problems,
        summary_table,
    )
    from tuner.errors import DataError

    index = build_index(
        patches, labels, pattern=pattern or DEFAULT_PATTERN, case_column=case_column,
        label_column=label_column, classes=parse_classes(classes),
    )  # fmt: skip
    if images and index.patches:
        with tqdm(total=len(index.patches), unit="image", desc="checking images",
                  disable=None if progress_enabled() else True) as bar:  # fmt: skip
            index.problems += check_images(
                index.root, [p.path for p in index.patches], progress=bar.update
            )
    index.problems += class_problems(index, folds)
    click.echo(summary_table(index, per_case=cases))
    for problem in index.problems:
        click.echo(problem.describe())
    fatal = index.fatal_problems
    if fatal:
        more = f" (and {len(fatal) - 1} more, listed above)" if len(fatal) > 1 else ""
        raise DataError(
            "the dataset cannot be used for training: "
            + fatal[0].describe(max_examples=2).removeprefix("error: ")
            + more
        )
    click.echo("ok: the dataset can be used for training")


@data.command()
@click.argument("patches", type=PATH, required=False)
@click.option("--labels", type=PATH, default=None, help="Labels CSV (with PATCHES).")
@click.option("--features", type=PATH, default=None, help="Split the cases of a feature store.")
@click.option("--out", type=PATH, required=True, help="JSON file to write.")
@click.option("--pattern", default=None, help="Path pattern (see 'tuner data check --help').")
@click.option("--case-column", default="case", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--folds", type=int, default=None, help="k folds instead of 60/20/20.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--balance-patches", is_flag=True, help="Also balance by patches per case.")
def split(
    patches: Path | None,
    labels: Path | None,
    features: Path | None,
    out: Path,
    pattern: str | None,
    case_column: str,
    label_column: str,
    folds: int | None,
    seed: int,
    balance_patches: bool,
) -> None:
    """Split cases into train/val/test, stratified by label, and save the case ids as JSON.

    The cases come from PATCHES with --labels, or from a feature store with --features.
    """
    from tuner.data import DEFAULT_PATTERN, build_index, make_splits
    from tuner.errors import DataError

    if features is not None:
        from tuner.features import FeatureStore

        store = FeatureStore.open(features)
        case_labels, counts, names = store.labels(), store.patch_counts(), store.classes
    elif patches is not None and labels is not None:
        index = build_index(
            patches, labels, pattern=pattern or DEFAULT_PATTERN, case_column=case_column,
            label_column=label_column,
        )  # fmt: skip
        index.raise_for_fatal()
        case_labels, counts, names = (
            index.case_labels(),
            index.patch_counts(),
            index.labels.classes,
        )
    else:
        raise DataError("give PATCHES with --labels, or --features STORE, to say what to split")
    splits = make_splits(
        case_labels, seed=seed, folds=folds, patch_counts=counts if balance_patches else None,
        class_names=names,
    )  # fmt: skip
    splits.save(out)
    for number, part in enumerate(splits.splits):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in part.parts().items())
        click.echo(f"{f'fold {number}: ' if folds else ''}{sizes}")
    click.echo(f"wrote {out}")
