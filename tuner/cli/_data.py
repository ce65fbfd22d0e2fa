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
    from tuner.data import check_dataset

    result = check_dataset(
        patches, labels, pattern=pattern, case_column=case_column, label_column=label_column,
        classes=parse_classes(classes), folds=folds, images=images, progress=progress_enabled(),
    )  # fmt: skip
    click.echo(result.render(per_case=cases))
    if result.error is not None:
        raise result.error
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
    from tuner.data import make_splits, split_dataset
    from tuner.errors import DataError

    if features is not None:
        from tuner.features import FeatureStore

        store = FeatureStore.open(features)
        splits = make_splits(
            store.labels(), seed=seed, folds=folds,
            patch_counts=store.patch_counts() if balance_patches else None,
            class_names=store.classes,
        )  # fmt: skip
    elif patches is not None and labels is not None:
        splits = split_dataset(
            patches, labels, pattern=pattern, case_column=case_column,
            label_column=label_column, seed=seed, folds=folds, balance_patches=balance_patches,
        )  # fmt: skip
    else:
        raise DataError("give PATCHES with --labels, or --features STORE, to say what to split")
    splits.save(out)
    for number, part in enumerate(splits.splits):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in part.parts().items())
        click.echo(f"{f'fold {number}: ' if folds else ''}{sizes}")
    click.echo(f"wrote {out}")
