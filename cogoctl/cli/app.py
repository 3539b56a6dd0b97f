"""The Typer app, global options and error handling (one line per error, documented exit codes)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cogoctl.errors import CogoError, ExitCode

app = typer.Typer(
    name="cogoctl",
    help="Supervise the worker services of an AI-agent backend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile", "-p", help="dev, prod (packaged profiles) or a path to a YAML profile.", envvar="COGO_PROFILE"
    ),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    if debug:
        os.environ["COGO_DEBUG"] = "1"


def _register() -> None:
    from cogoctl.cli import control, lifecycle, monitor, observe, tasks

    lifecycle.register(app)
    control.register(app)
    tasks.register(app)
    monitor.register(app)
    observe.register(app)


def main() -> None:
    _register()
    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit raised in a command
    except CogoError as exc:
        if os.environ.get("COGO_DEBUG"):
            raise
        print(f"cogoctl: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(ExitCode.USAGE)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
