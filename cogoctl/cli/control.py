"""`status`, `start`, `stop`, `restart`: looking at and steering workers."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cogoctl.cli.app import ProfileOpt
from cogoctl.cli.common import client_for
from cogoctl.errors import ExitCode

TargetArg = Annotated[str, typer.Argument(help="A worker name (all its instances), an instance id, or `all`.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return at once instead of when the change is done.")]


def register(app: typer.Typer) -> None:
    app.command(help="Show every worker instance: state, pid, port, uptime, restarts, cpu, memory.")(status)
    app.command(help="Start a worker, an instance, or all (clears FATAL).")(start)
    app.command(help="Stop a worker, an instance, or all.")(stop)
    app.command(help="Restart a worker (rolling, one instance at a time), an instance, or all.")(restart)


def status(
    name: Annotated[str | None, typer.Argument(help="Only this worker or instance.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    profile: ProfileOpt = "dev",
) -> None:
    from cogoctl.cli.fast import status_command

    status_command(name, as_json, profile)


def _act(action: str, target: str, profile: str, no_wait: bool) -> None:
    from urllib.parse import quote

    client = client_for(profile, timeout=None)
    data = client.post(f"/api/workers/{quote(target, safe='')}/{action}?wait={0 if no_wait else 1}", ok=(200, 409))
    from cogoctl.cli.render import print_status

    print_status(data["instances"])
    if not data["ok"]:
        print(f"cogoctl: {action} {target}: not every instance reached the wanted state", file=sys.stderr)
        raise typer.Exit(ExitCode.FAILED)


def start(target: TargetArg, profile: ProfileOpt = "dev", no_wait: NoWait = False) -> None:
    _act("start", target, profile, no_wait)


def stop(target: TargetArg, profile: ProfileOpt = "dev", no_wait: NoWait = False) -> None:
    _act("stop", target, profile, no_wait)


def restart(target: TargetArg, profile: ProfileOpt = "dev", no_wait: NoWait = False) -> None:
    _act("restart", target, profile, no_wait)
