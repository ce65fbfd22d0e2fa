"""``tuner features extract|import|info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuner.cli._options import PATH, dataset_options, parse_classes, progress_enabled


@click.group()
def features() -> None:
    """Build and inspect feature stores (backbone features computed once)."""


@features.command()
@click.argument("patches", type=PATH)
@dataset_options
@click.option("--out", type=PATH, required=True, help="Feature store folder to write.")
@click.option(
    "--backbone",
    default="densenet121",
    show_default=True,
    help="Encoder: densenet121, uni, uni2-h, virchow2, h-optimus-0, a torchvision model, or "
    "timm:MODEL (timm:hf-hub:ORG/NAME too); hub models take @REVISION.",
)
@click.option(
    "--weights", default="pretrained", show_default=True,
    help="pretrained (the model's own; imagenet for torchvision), random (seeded), or a "
    "state-dict file. Gated hub models read the token in HF_TOKEN.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=64, show_default=True, help="Patches per forward pass.")
@click.option(
    "--image-size", type=int, default=None,
    help="Resize patches (default: the encoder's input size; torchvision: as they are).",
)  # fmt: skip
@click.option("--views", default=1, show_default=True, help="The patch plus K-1 augmented copies.")
@click.option("--seed", default=0, show_default=True, help="Seed of random weights and views.")
@click.option("--workers", type=int, default=None, help="Loader processes (default: 0 on CPU).")
@click.option("--overwrite", is_flag=True, help="Replace a store made with other settings.")
def extract(
    patches: Path,
    labels: Path,
    pattern: str | None,
    case_column: str,
    label_column: str,
    classes: str | None,
    out: Path,
    backbone: str,
    weights: str,
    device: str,
    batch_size: int,
    image_size: int | None,
    views: int,
    seed: int,
    workers: int | None,
    overwrite: bool,
) -> None:
    """Run a frozen encoder once over every patch in PATCHES and write a feature store.

    An interrupted extraction resumes where it stopped when run again with the same options.
    """
    from tuner.data import DEFAULT_PATTERN
    from tuner.features import ExtractOptions, extract_features

    options = ExtractOptions(
        backbone=backbone, weights=weights, seed=seed, device=device, batch_size=batch_size,
        image_size=image_size, views=views, workers=workers, overwrite=overwrite,
        progress=progress_enabled(),
    )  # fmt: skip
    store = extract_features(
        patches, labels, out, options, pattern=pattern or DEFAULT_PATTERN,
        case_column=case_column, label_column=label_column, classes=parse_classes(classes),
    )  # fmt: skip
    click.echo(describe_store(store.manifest, store.path))


@features.command("import")
@click.argument("table", type=PATH)
@click.option("--labels", type=PATH, required=True, help="Labels CSV: one row per case.")
@click.option("--out", type=PATH, required=True, help="Feature store folder to write.")
@click.option("--encoder", default="external", show_default=True, help="Encoder name.")
@click.option("--case-column", default="case", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--classes", default=None, help="Class names in index order, comma-separated.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def import_(
    table: Path,
    labels: Path,
    out: Path,
    encoder: str,
    case_column: str,
    label_column: str,
    classes: str | None,
    overwrite: bool,
) -> None:
    """Import embeddings from another encoder: TABLE lists one array file per slide.

    TABLE is a CSV with columns case, stain, slice, path; each path names an array of shape
    (n_patches, dim) in .npy, .npz, .pt or .h5 (CLAM/TRIDENT 'features').
    """
    from tuner.features import import_embeddings

    store = import_embeddings(
        table, labels, out, encoder=encoder, case_column=case_column, label_column=label_column,
        classes=parse_classes(classes), overwrite=overwrite,
    )  # fmt: skip
    click.echo(describe_store(store.manifest, store.path))


@features.command()
@click.argument("store", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check the checksum.")
def info(store: Path, as_json: bool, verify: bool) -> None:
    """Describe the feature store STORE and verify its checksum."""
    from tuner.features import FeatureStore

    opened = FeatureStore.open(store, verify=verify)
    if as_json:
        click.echo(json.dumps(opened.manifest, indent=2))
    else:
        click.echo(describe_store(opened.manifest, opened.path))
        if verify:
            click.echo("checksum: ok")


def describe_store(manifest: dict[str, Any], path: Path) -> str:
    counts = manifest["counts"]
    return (
        f"feature store {path}: {counts['patches']} patches x {manifest['views']} view(s) x "
        f"{manifest['dim']} ({manifest['backbone']}, {manifest['weights']['kind']} weights), "
        f"{counts['cases']} cases, {counts['slices']} slices; "
        f"classes {', '.join(manifest['classes'])}"
    )
