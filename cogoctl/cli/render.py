"""Rich rendering of status tables and events (imported only by commands that print them)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

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


def fmt_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def status_table(workers: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, expand=False, header_style="bold")
    for col, justify in (
        ("INSTANCE", "left"), ("STATE", "left"), ("PID", "right"), ("PORT", "right"), ("UPTIME", "right"),
        ("RESTARTS", "right"), ("CPU", "right"), ("MEM", "right"), ("REASON", "left"),
    ):  # fmt: skip
        table.add_column(col, justify=justify, no_wrap=col != "REASON")  # type: ignore[arg-type]
    for w in workers:
        state = w["state"]
        table.add_row(
            w["instance"],
            Text(state, style=STATE_STYLE.get(state, "")),
            _num(w.get("pid")),
            _num(w.get("port")),
            fmt_uptime(w.get("uptime_s")),
            str(w.get("restarts", 0)),
            _num(w.get("cpu_percent"), "%"),
            _num(w.get("rss_mb"), " MB"),
            Text(w.get("reason") or "", overflow="fold"),
        )
    if not workers:
        table.add_row("(no workers enabled in this profile)", "", "", "", "", "", "", "", "")
    return table


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
