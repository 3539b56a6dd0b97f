"""One listener per legacy port: accept, enforce the connection limit, pick the target, relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cogoctl.bridge.directory import Directory
from cogoctl.bridge.relay import relay
from cogoctl.bridge.routes import Picker, Route
from cogoctl.errors import CogoError, ExitCode

log = logging.getLogger("cogoctl.bridge")
CONNECT_TIMEOUT = 2.0


class PortInUse(CogoError):
    exit_code = ExitCode.USAGE


def port_holder(port: int) -> str:
    """`pid 123 (python -m other)` for whoever listens on the TCP port, as far as we can see."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    cmd = " ".join(psutil.Process(conn.pid).cmdline())[:80]
                except psutil.Error:
                    cmd = "?"
                return f"pid {conn.pid} ({cmd})"
    except Exception:  # no permission to see other users' sockets
        pass
    return "an unknown process"


def emit(event: str, **fields: Any) -> None:
    """Structured events, one JSON object a line on stderr (the worker's log under `cogoctl up`)."""
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}), file=sys.stderr, flush=True)


@dataclass
class Stats:
    open: int = 0
    total: int = 0
    refused: int = 0  # over max_connections
    unreachable: int = 0  # no target, or connect failed
    errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class Listener:
    def __init__(
        self,
        route: Route,
        host: str,
        directory: Directory,
        max_connections: int,
        idle_timeout: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.route = route
        self.host = host
        self.directory = directory
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.stats = Stats()
        self.picker = Picker()
        self.sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._on_change = on_change or (lambda: None)
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        port = self.route.legacy_port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (98, 13):  # EADDRINUSE, EACCES
                raise PortInUse(
                    f"legacy port {port} on {self.host} is {'in use by ' + port_holder(port) if exc.errno == 98 else 'not allowed'}"
                    "; stop that process, or change legacy_support.port_redirection"
                ) from None
            raise
        sock.listen(1024)
        sock.setblocking(False)
        self.sock = sock
        self._accepting = asyncio.create_task(self._accept_forever())
        emit("listener up", port=port, host=self.host, target=self.route.worker_port, worker=self.route.worker)

    async def stop(self) -> None:
        if self.sock is None:
            return
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        self.sock.close()
        self.sock = None
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        emit("listener down", port=self.route.legacy_port)

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE and the like: say so, breathe, go on
                emit("accept failed", port=self.route.legacy_port, error=exc.strerror)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            if self.stats.open >= self.max_connections:
                self.stats.refused += 1
                if self.stats.refused == 1 or self.stats.refused % 100 == 0:
                    emit("limit hit", port=self.route.legacy_port, max_connections=self.max_connections,
                         refused=self.stats.refused)  # fmt: skip
                conn.close()
                self._on_change()
                continue
            task = asyncio.create_task(self._handle(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    def target_port(self) -> int | None:
        if self.route.worker is None:
            return self.route.worker_port
        ports = self.directory.ports_of(self.route.worker)
        if ports is None:  # no supervisor to ask: the profile's port
            return self.route.worker_port
        return self.picker.pick(ports)

    async def _handle(self, conn: socket.socket) -> None:
        s = self.stats
        s.open += 1
        s.total += 1
        self._on_change()
        try:
            target = await self._connect()
            if target is None:
                s.unreachable += 1
                conn.close()
                return
            traffic, ended = await relay(conn, target, self.idle_timeout)
            s.bytes_up += traffic.up
            s.bytes_down += traffic.down
            if ended.startswith("error"):
                s.errors += 1
        finally:
            s.open -= 1
            with contextlib.suppress(OSError):
                conn.close()
            self._on_change()

    async def _connect(self) -> socket.socket | None:
        """Connect to the current target; after a miss, ask the supervisor once more (an instance
        may have just become RUNNING or moved) before giving up."""
        loop = asyncio.get_running_loop()
        error = "no RUNNING instance"
        port = None
        for attempt in range(2):
            if attempt:
                await self.directory.refresh()
            port = self.target_port()
            if port is None:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
                return sock
            except (OSError, TimeoutError) as exc:
                sock.close()
                error = type(exc).__name__
        emit("target unreachable", port=self.route.legacy_port, target=port, worker=self.route.worker, error=error)
        return None

    def snapshot(self) -> dict[str, Any]:
        return {"legacy_port": self.route.legacy_port, "target": self.route.worker_port, "worker": self.route.worker,
                **asdict(self.stats)}  # fmt: skip
