"""The Typer app and its global options. Entry point and error handling: cogoctl/cli/main.py."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cogoctl.errors import ExitCode

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
    from cogoctl.cli import bridge, control, lifecycle, monitor, observe, tasks

    lifecycle.register(app)
    bridge.register(app)
    control.register(app)
    tasks.register(app)
    monitor.register(app)
    observe.register(app)


def run(argv: list[str]) -> int:
    """Run the Typer CLI; return its exit code. Errors propagate to cli/main.py."""
    _register()
    try:
        rc = app(args=argv, prog_name="cogoctl", standalone_mode=False)  # a typer.Exit's code comes back
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return 130
    except Exception as exc:  # usage errors of typer's (vendored) click know how to show themselves
        if callable(getattr(exc, "show", None)) and callable(getattr(exc, "format_message", None)):
            exc.show()  # type: ignore[attr-defined]
            return int(ExitCode.USAGE)
        raise
    return rc if isinstance(rc, int) else 0
