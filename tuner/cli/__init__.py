"""The ``tuner`` command line: a thin layer of option parsing over the package's functions.

This is the one place that turns a :class:`~tuner.errors.TunerError` into a single line on
stderr and a non-zero exit code: :data:`~tuner.errors.PERMANENT_EXIT_CODE` for an error marked
permanent (a worker or launcher that cannot start for good), else 1. The library names its
parameters in messages (``device 'cuda:9' does not exist``); the line printed here names the
flag (``--device 'cuda:9' does not exist``), see :data:`FLAGS`.
"""

from __future__ import annotations

import re
import sys

import click

from tuner.cli import _data, _features, _study, _train
from tuner.cli._options import QUIET_HELP, VERBOSE_HELP, add_verbosity_options, set_verbosity
from tuner.errors import PERMANENT_EXIT_CODE, TunerError

__all__ = ["FLAGS", "cli", "main"]

FLAGS = {"url": "--storage", "time_limit": "--time"}
"""The flag of each library parameter whose flag is not its name with dashes (``per_gpu`` is
``--per-gpu``)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.version_option(package_name="tuner", prog_name="tuner")
def cli(quiet: bool, verbose: bool) -> None:
    """Hyperparameter optimisation for hierarchical attention MIL models.

    The flow: demo-data or your patches -> data check -> features extract -> study create ->
    worker / launch -> status / dashboard -> export -> train.
    """
    set_verbosity(quiet=quiet, verbose=verbose)


cli.add_command(_data.demo_data)
cli.add_command(_data.data)
cli.add_command(_features.features)
cli.add_command(_train.config)
cli.add_command(_train.train)
cli.add_command(_train.explain)
cli.add_command(_train.evaluate)
cli.add_command(_study.study)
for _command in (_study.worker, _study.launch, _study.slurm, _study.k8s, _study.status,
                 _study.export, _study.dashboard, _study.quickstart, _study.report):  # fmt: skip
    cli.add_command(_command)
add_verbosity_options(cli)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return (and, as a console script, exit with) its status."""
    try:
        status = cli.main(args=argv, prog_name="tuner", standalone_mode=False)
    except TunerError as exc:
        _fail(flag_message(exc))
        return PERMANENT_EXIT_CODE if exc.permanent else 1
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(exc.format_message() + where)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted")
        return 130
    except click.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except OSError as exc:  # a path the commands did not check themselves: still one line
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}:{where}; check the path and its permissions")
        return 1
    return status if isinstance(status, int) else 0


def flag_message(error: TunerError) -> str:
    """The error's message with the parameters it names (``error.params``) as flags."""
    message = str(error)
    for param in error.params:
        flag = FLAGS.get(param, "--" + param.replace("_", "-"))
        word = rf"(?<![\w./-]){re.escape(param)}(?![\w./-])"
        message = re.sub(word, flag, message, count=1)
    return message


def _fail(message: str) -> None:
    print(f"tuner: error: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
