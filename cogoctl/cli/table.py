"""The status table as plain text (ANSI colours on a terminal). Standard library only, so that
`cogoctl status` starts fast; `up`'s live view shows the same text through Rich."""

from __future__ import annotations

from typing import Any

COLOURS = {
    "RUNNING": "32",
    "STARTING": "36",
    "UNHEALTHY": "33",
    "STOPPING": "35",
    "BACKOFF": "33",
    "EXITED": "2",
    "STOPPED": "2",
    "FATAL": "1;31",
}
COLUMNS = ("INSTANCE", "STATE", "PID", "PORT", "UPTIME", "RESTARTS", "CPU", "MEM", "REASON")
RIGHT = {"PID", "PORT", "UPTIME", "RESTARTS", "CPU", "MEM"}


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


def status_text(workers: list[dict[str, Any]], colour: bool = False, width: int = 160) -> str:
    rows = [
        (
            w["instance"],
            w["state"],
            _num(w.get("pid")),
            _num(w.get("port")),
            fmt_uptime(w.get("uptime_s")),
            str(w.get("restarts", 0)),
            _num(w.get("cpu_percent"), "%"),
            _num(w.get("rss_mb"), " MB"),
            w.get("reason") or "",
        )
        for w in workers
    ]
    if not rows:
        return "(no workers enabled in this profile)"
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(COLUMNS)]
    room = max(20, width - sum(widths[:-1]) - 2 * (len(COLUMNS) - 1))
    lines = []
    for k, row in enumerate([COLUMNS, *rows]):
        cells = []
        for i, (col, cell) in enumerate(zip(COLUMNS, row, strict=True)):
            if col == "REASON":
                cells.append(cell if len(cell) <= room else cell[: room - 1] + "…")
                continue
            padded = cell.rjust(widths[i]) if col in RIGHT else cell.ljust(widths[i])
            if colour and k == 0:
                padded = f"\x1b[1m{padded}\x1b[0m"
            elif colour and col == "STATE":
                padded = f"\x1b[{COLOURS.get(cell, '0')}m{padded}\x1b[0m"
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


BALANCER_COLUMNS = (
    "queued",
    "inflight",
    "accepted",
    "success",
    "error",
    "timeout",
    "rejected",
    "cancelled",
    "lost",
    "retried",
)


def balancer_text(view: dict[str, Any]) -> str:
    """One line per worker type the balancer has seen tasks for (none: empty string)."""
    lines = []
    for name, counts in (view.get("workers") or {}).items():
        if not any(counts.get(k) for k in BALANCER_COLUMNS):
            continue
        parts = ", ".join(
            f"{k} {counts.get(k, 0)}" for k in BALANCER_COLUMNS if counts.get(k) or k in ("queued", "inflight")
        )
        lines.append(f"balancer {name} ({counts.get('strategy', '')}): {parts}")
    return "\n".join(lines)
