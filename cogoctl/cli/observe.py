"""`logs`, `events`, `config`: reading what the supervisor recorded, and the effective profile."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cogoctl.cli.app import ProfileOpt
from cogoctl.cli.common import client_for

Follow = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines as they come.")]
Lines = Annotated[int, typer.Option("--lines", "-n", help="How many past lines to print first.")]


def register(app: typer.Typer) -> None:
    app.command(help="Print a worker's (or an instance's) log lines.")(logs)
    app.command(help="Print the supervisor's events: every state change with its reason.")(events)
    app.command(help="Print the effective profile (after ${VAR} substitution and defaults).")(config)


def _write(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `cogoctl logs x | head`
        raise typer.Exit(0) from None


def logs(
    name: Annotated[str, typer.Argument(help="A worker name or an instance id.")],
    follow: Follow = False,
    lines: Lines = 50,
    profile: ProfileOpt = "dev",
) -> None:
    from urllib.parse import quote

    client = client_for(profile)
    path = f"/api/workers/{quote(name, safe='')}/logs?n={lines}"
    if follow:
        items = client.stream("GET", path + "&follow=1")
    else:
        items = iter(client.get(path)["lines"])
    try:
        for item in items:
            _write(f"{item['instance']} | {item['line']}")
    except KeyboardInterrupt:
        pass


def events(
    follow: Follow = False,
    lines: Lines = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    profile: ProfileOpt = "dev",
) -> None:
    from cogoctl.cli.render import event_line

    client = client_for(profile)
    path = f"/api/events?n={lines}"
    items = client.stream("GET", path + "&follow=1") if follow else iter(client.get(path)["events"])
    try:
        for ev in items:
            _write(json.dumps(ev) if as_json else event_line(ev))
    except KeyboardInterrupt:
        pass


def config(
    profile: ProfileOpt = "dev",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    from cogoctl.profile import load_profile

    data = load_profile(profile).to_dict()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    import yaml

    def plain(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [plain(v) for v in obj]
        return obj

    print(yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=False), end="")
