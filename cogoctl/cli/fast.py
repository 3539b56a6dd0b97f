"""`cogoctl status` without importing typer or rich: the most frequent command starts in the
time of the interpreter plus one request. Anything it does not recognise (help, --debug, an
unknown option) goes to the full Typer CLI, which calls the same `status_command`."""

from __future__ import annotations

import json
import os
import shutil
import sys


def status_command(name: str | None, as_json: bool, profile: str) -> None:
    from urllib.parse import quote

    from cogoctl.cli.common import client_for
    from cogoctl.cli.table import balancer_text, status_text

    path = "/api/workers/status" + (f"?name={quote(name)}" if name else "")
    data = client_for(profile).get(path)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((160, 24)).columns if tty else 160
    print(status_text(data["workers"], colour=tty and "NO_COLOR" not in os.environ, width=width))
    summary = balancer_text(data.get("balancer") or {}) if not name else ""
    if summary:
        print(summary)


def parse_status(argv: list[str]) -> tuple[str | None, bool, str] | None:
    """`status [NAME] [--json] [-p P | --profile P | --profile=P]`, or None to defer to Typer."""
    if not argv or argv[0] != "status":
        return None
    name: str | None = None
    as_json = False
    profile = os.environ.get("COGO_PROFILE", "dev")
    args = iter(argv[1:])
    for arg in args:
        if arg == "--json":
            as_json = True
        elif arg in ("-p", "--profile"):
            value = next(args, None)
            if value is None:
                return None
            profile = value
        elif arg.startswith("--profile="):
            profile = arg.split("=", 1)[1]
        elif arg.startswith("-") or name is not None:
            return None
        else:
            name = arg
    return name, as_json, profile
