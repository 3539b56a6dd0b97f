"""`health` (the /health answer plus the monitor's view) and `top` (a live dashboard)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from cogoctl.cli.app import ProfileOpt
from cogoctl.cli.common import client_for


def register(app: typer.Typer) -> None:
    app.command(help="A worker's /health answer and what the health monitor sees.")(health)
    app.command(help="A live dashboard of every instance's metrics, refreshing in place.")(top)


def health(
    name: Annotated[str, typer.Argument(help="A worker name or an instance id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    profile: ProfileOpt = "dev",
) -> None:
    from urllib.parse import quote

    data = client_for(profile).get(f"/api/workers/{quote(name, safe='')}/health")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from rich.panel import Panel
    from rich.table import Table

    from cogoctl.cli.render import STATE_STYLE, console
    from cogoctl.cli.table import fmt_uptime

    out = console()
    unhealthy = False
    for inst in data["instances"]:
        mon = inst["monitor"]
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        state = inst["state"]
        unhealthy |= state != "RUNNING"
        table.add_row("state", f"[{STATE_STYLE.get(state, '')}]{state}[/] ({inst['reason']})")
        table.add_row("pid / port", f"{inst['pid']} / {inst['port']}")
        table.add_row("uptime / restarts", f"{fmt_uptime(inst['uptime_s'])} / {inst['restarts']}")
        if inst.get("health") is not None or inst.get("probe_error"):
            answer = json.dumps(inst["health"]) if inst.get("health") is not None else "-"
            err = f"  [red]{inst['probe_error']}[/red]" if inst.get("probe_error") else ""
            table.add_row("/health", f"{answer}{err}")
        if mon.get("probe"):
            p = mon["probe"]
            table.add_row("probe", f"every {p['interval_s']:g}s, timeout {p['timeout_s']:g}s, "
                          f"failures {p['failures']}/{p['failures_allowed']}, last {p['last_ms']} ms")  # fmt: skip
        if mon.get("heartbeats"):
            h = mon["heartbeats"]
            table.add_row("heartbeats", f"every {h['interval_s']:g}s, window {h['window_s']:g}s, "
                          f"last {h['last_age_s']}s ago (seq {h['seq']}), link {'up' if h['linked'] else 'down'}")  # fmt: skip
        lim = mon["limits"]
        if lim["memory_mb"] or lim["cpu_percent"]:
            table.add_row(
                "limits",
                f"memory {lim['memory_mb'] or '-'} MB, cpu {lim['cpu_percent'] or '-'}% for {lim['window_s']:g}s",
            )
        m = mon.get("metrics") or {}
        if m:
            table.add_row("usage", f"cpu {m.get('cpu_percent')}%, rss {m.get('rss_mb')} MB, "
                          f"{m.get('threads')} threads, {m.get('fds')} fds, {m.get('children')} children")  # fmt: skip
        load = mon.get("load") or {}
        if load:
            table.add_row("load", ", ".join(f"{k} {v}" for k, v in load.items()))
        out.print(Panel(table, title=inst["instance"], expand=False))
    if unhealthy:
        raise typer.Exit(1)


def _top_table(data: dict[str, Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    from cogoctl.cli.render import STATE_STYLE
    from cogoctl.cli.table import fmt_uptime

    sup = data.get("supervisor", {})
    table = Table(title=f"cogoctl top — supervisor pid {sup.get('pid')}, up {fmt_uptime(sup.get('uptime_s'))}",
                  header_style="bold")  # fmt: skip
    cols = [
        "INSTANCE",
        "STATE",
        "PID",
        "CPU%",
        "RSS MB",
        "THR",
        "FDS",
        "ACTIVE",
        "QUEUED",
        "OK",
        "ERR",
        "HB AGE",
        "RESTARTS",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("INSTANCE", "STATE") else "right", no_wrap=True)

    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))

    for w in data["workers"]:
        table.add_row(
            w["instance"], Text(w["state"], style=STATE_STYLE.get(w["state"], "")), f(w["pid"]), f(w["cpu_percent"]),
            f(w["rss_mb"]), f(w.get("threads")), f(w.get("fds")), f(w.get("inflight", w.get("active"))), f(w.get("queued")),
            f(w.get("tasks_ok")), f(w.get("tasks_failed")), f(w.get("last_heartbeat_age_s")), f(w["restarts"]),
        )  # fmt: skip
    balancer = Table(title="balancer", header_style="bold")
    cols = ("WORKER", "QUEUED", "IN FLIGHT", "ACCEPTED", "OK", "ERRORS", "TIMEOUTS", "REJECTED", "LOST", "RETRIED")
    for col in cols:
        balancer.add_column(col, justify="left" if col == "WORKER" else "right", no_wrap=True)
    for name, c in (data.get("balancer") or {}).get("workers", {}).items():
        balancer.add_row(name, *(str(c.get(k, 0)) for k in ("queued", "inflight", "accepted", "success", "error",
                                                              "timeout", "rejected", "lost", "retried")))  # fmt: skip
    from rich.console import Group

    return Group(table, balancer)


def top(
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds between refreshes.")] = 1.0,
    iterations: Annotated[
        int, typer.Option("--iterations", "-n", help="Stop after N refreshes (0: until Ctrl-C).")
    ] = 0,
    profile: ProfileOpt = "dev",
) -> None:
    from rich.live import Live

    from cogoctl.cli.render import console

    client = client_for(profile, timeout=5.0)
    count = 0
    with Live(_top_table(client.get("/api/workers/status")), console=console(), auto_refresh=False) as live:
        try:
            while iterations == 0 or count < iterations:
                count += 1
                live.update(_top_table(client.get("/api/workers/status")), refresh=True)
                if iterations and count >= iterations:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
