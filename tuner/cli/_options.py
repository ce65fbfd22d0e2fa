"""Options shared by several commands, and small helpers of the command line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

PATH = click.Path(path_type=Path)


def dataset_options(f: F) -> F:
    """--labels, --pattern, --case-column, --label-column, --classes."""
    for decorator in reversed(
        [
            click.option(
                "--labels", type=PATH, required=True,
                help="Labels CSV: one row per case, with a case and a label column.",
            ),
            click.option(
                "--pattern", default=None,
                help="Regex with named groups case, stain, slice (and optionally patch), matched "
                "against each patch path relative to the folder. Default: "
                "CASE/STAIN/SLICE/PATCH.png or CASE_STAIN_SLICE_patchPATCH.png.",
            ),
            click.option(
                "--case-column", default="case", show_default=True,
                help="Column of the labels CSV with the case ids.",
            ),
            click.option(
                "--label-column", default="label", show_default=True,
                help="Column of the labels CSV with the labels.",
            ),
            click.option(
                "--classes", default=None,
                help="Class names in index order, comma-separated (default: sorted labels).",
            ),
        ]
    ):  # fmt: skip
        f = decorator(f)
    return f


def parse_classes(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def progress_enabled() -> bool:
    """Progress bars are shown unless --quiet was given."""
    return logging.getLogger("tuner").isEnabledFor(logging.INFO)
