"""`cogoctl bridge`: the legacy port redirector in the foreground, and `--check`."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Annotated, Any

import typer

from cogoctl.cli.app import ProfileOpt
from cogoctl.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command(help="Run the legacy port redirector (legacy_support.port_redirection) in the foreground.")(bridge)


def _socket(profile: str) -> str:
    from cogoctl import paths
    from cogoctl.cli.common import configured_socket, state_dir_for

    sd = state_dir_for(profile)
    return configured_socket(sd) or paths.socket_path(sd)


def bridge(
    profile: ProfileOpt = "dev",
    check: Annotated[
        bool, typer.Option("--check", help="Say per mapping who holds the legacy port and whether the target answers.")
    ] = False,
) -> None:
    from cogoctl.profile import load_profile

    prof = load_profile(profile)
    if not prof.legacy_support.port_redirection:
        print("cogoctl: the profile has no legacy_support.port_redirection entries; nothing to do")
        raise typer.Exit(ExitCode.USAGE)
    if check:
        raise typer.Exit(asyncio.run(_check(prof, _socket(profile))))
    asyncio.run(_foreground(prof, _socket(profile)))


async def _check(prof: Any, sock: str) -> int:
    from cogoctl.bridge.listener import port_holder
    from cogoctl.bridge.server import Bridge

    b = Bridge(prof, sock)
    await b.directory.refresh()
    ok = True
    for listener in b.listeners:
        r = listener.route
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((prof.legacy_support.host, r.legacy_port))
                legacy = "free"
            except OSError:
                holder = port_holder(r.legacy_port)
                if "cogoctl" in holder and "bridge" in holder:  # `cogoctl bridge`, or the supervised one
                    legacy = f"held by the cogoctl bridge ({holder})"
                else:
                    legacy = f"held by {holder}"
                    ok = False
        port = listener.target_port()
        who = r.worker or "fixed address"
        if port is None:
            target, good = f"{who}: no RUNNING instance", False
        else:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
                w.close()
                target, good = f"127.0.0.1:{port} ({who}) answers", True
            except (OSError, TimeoutError) as exc:
                target, good = f"127.0.0.1:{port} ({who}) does not answer ({type(exc).__name__})", False
        ok &= good
        print(f"{r.legacy_port} -> {r.worker_port}: legacy port {legacy}; target {target}")
    return 0 if ok else 1


async def _foreground(prof: Any, sock: str) -> None:
    from rich.live import Live
    from rich.table import Table

    from cogoctl.aio import wait_event
    from cogoctl.bridge.server import Bridge
    from cogoctl.cli.render import console

    def table() -> Table:
        t = Table(title="cogoctl bridge", header_style="bold")
        for col in ("LISTENER", "TARGET", "OPEN", "TOTAL", "REFUSED", "UNREACHABLE", "BYTES UP", "BYTES DOWN"):
            t.add_column(col, justify="left" if col in ("LISTENER", "TARGET") else "right")
        for listener in b.listeners:
            s = listener.stats
            r = listener.route
            target = f"{r.worker_port}" + (f" ({r.worker})" if r.worker else "")
            t.add_row(f"{prof.legacy_support.host}:{r.legacy_port}", target, str(s.open), str(s.total), str(s.refused),
                      str(s.unreachable), f"{s.bytes_up:,}", f"{s.bytes_down:,}")  # fmt: skip
        return t

    b = Bridge(prof, sock)
    await b.start()  # PortInUse: one line, exit 2 (cli/main.py)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with Live(table(), console=console(), refresh_per_second=4) as live:
            while not await wait_event(stop, 0.25):
                live.update(table())
    finally:
        await b.stop()
