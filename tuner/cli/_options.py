"""Options shared by several commands, and small helpers of the command line."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

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


def set_verbosity(*, quiet: bool = False, verbose: bool = False) -> None:
    """Log tuner's messages to stderr: warnings only when ``quiet``, debug when ``verbose``."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tuner: %(message)s"))
    root = logging.getLogger("tuner")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _verbosity_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # given after a subcommand: overrides what the group set
        set_verbosity(quiet=param.name == "quiet", verbose=param.name == "verbose")


QUIET_HELP = "Only warnings and errors; no progress bars."
VERBOSE_HELP = "Debug messages."


def add_verbosity_options(group: click.Group) -> None:
    """Give every command under ``group`` (at any depth) -q/--quiet and -v/--verbose, so they
    work after the subcommand (``tuner train -q``) as well as before it (``tuner -q train``)."""
    for command in group.commands.values():
        names = {name for param in command.params for name in param.opts}
        if not names & {"-q", "--quiet", "-v", "--verbose"}:
            command.params += [
                click.Option(
                    ["-q", "--quiet"], is_flag=True, expose_value=False, help=QUIET_HELP,
                    callback=_verbosity_callback,
                ),
                click.Option(
                    ["-v", "--verbose"], is_flag=True, expose_value=False, help=VERBOSE_HELP,
                    callback=_verbosity_callback,
                ),
            ]  # fmt: skip
        if isinstance(command, click.Group):
            add_verbosity_options(command)


def parse_classes(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def progress_enabled() -> bool:
    """Progress bars are shown unless --quiet was given."""
    return logging.getLogger("tuner").isEnabledFor(logging.INFO)


def explicit(ctx: click.Context, **values: Any) -> dict[str, Any]:
    """``values`` with those the user left at their default (not typed, not from the
    environment) set to None, so that the library can tell "not given" from "given"."""
    return {
        name: None if ctx.get_parameter_source(name) == ParameterSource.DEFAULT else value
        for name, value in values.items()
    }


def tuner_command() -> list[str]:
    """How to run this tuner again, as a command that works where it is printed: ``tuner`` when
    that is the executable on PATH, else the running executable's path (``.venv/bin/tuner``,
    relative when it lies below the working folder), else ``python -m tuner`` with this
    interpreter."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name != "tuner" or not argv0.is_file():
        return [sys.executable, "-m", "tuner"]
    on_path = shutil.which("tuner")
    if on_path is not None and Path(on_path).resolve() == argv0.resolve():
        return ["tuner"]
    here, executable = Path.cwd().resolve(), argv0.absolute()
    if not executable.is_relative_to(here):
        return [str(executable)]
    relative = str(executable.relative_to(here))
    return [relative if "/" in relative else f"./{relative}"]
