"""Rich rendering of status tables and events (imported only by commands that print them)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

STATE_STYLE = {
    "RUNNING": "green",
    "STARTING": "cyan",
    "UNHEALTHY": "yellow",
    "STOPPING": "magenta",
    "BACKOFF": "yellow",
    "EXITED": "dim",
    "STOPPED": "dim",
    "FATAL": "bold red",
}


def print_status(workers: list[dict[str, Any]]) -> None:
    """The status table (cli/table.py), coloured on a terminal."""
    from rich.text import Text

    from cogoctl.cli.table import status_text

    out = console()
    out.print(Text.from_ansi(status_text(workers, colour=out.is_terminal, width=out.width)))


def event_line(ev: dict[str, Any]) -> str:
    ts = ev.get("ts", "")
    kind = ev.get("kind")
    if kind == "state":
        return f"{ts} {ev.get('instance')}: {ev.get('old')} -> {ev.get('new')} ({ev.get('reason')})"
    rest = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("ts", "time", "kind"))
    return f"{ts} {kind}: {rest}"


def console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is not a terminal."""
    c = Console()
    if not c.is_terminal:
        c = Console(width=160)
    return c
