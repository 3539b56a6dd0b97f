"""The worker process: public port, supervisor link, heartbeats, signals."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import unix_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import Request, Response

from cogoctl import protocol
from cogoctl.protocol import ErrorCode, ProtocolError, error_frame
from cogoctl.worker.settings import Settings
from cogoctl.worker.tasks import Handler, TaskRunner

log = logging.getLogger("cogoctl.worker")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE / 1048576


class Worker:
    def __init__(
        self,
        name: str,
        capabilities: list[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env(name)
        self.runner = TaskRunner(self.settings.max_concurrency)
        self._declared = list(capabilities or [])
        self.started = time.monotonic()
        self.port: int | None = None
        self.health_checks: list[Callable[[], dict[str, Any] | None]] = []
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.stats: Callable[[], dict[str, float]] | None = None  # counters sent with each heartbeat
        self._stop: asyncio.Event | None = None  # created in the loop by main()
        self._origins = itertools.count(1)
        self._link_connected = False
        self._exit_code = 0
        self._drain_task: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ registration

    def handler(self, capability: str, action: str | None = None) -> Callable[[Handler], Handler]:
        """Register `fn` for a capability (any action, or only `action`)."""

        def deco(fn: Handler) -> Handler:
            self.runner.register(capability, action, fn)
            return fn

        return deco

    @property
    def capabilities(self) -> list[str]:
        """Declared order first (the first is what a task naming only the worker type gets)."""
        return list(dict.fromkeys([*self._declared, *self.runner.capabilities]))

    def health(self) -> tuple[int, dict[str, Any]]:
        """The /health answer. Extra checks may add fields or flip the status to 503."""
        body: dict[str, Any] = {
            "status": "draining" if self.runner.draining else "ok",
            "worker": self.settings.worker,
            "instance": self.settings.instance,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "active": self.runner.active,
            "queued": self.runner.queued,
            "linked": self._link_connected,
        }
        status = 200
        for check in self.health_checks:
            extra = dict(check() or {})
            if extra.get("status") not in (None, "ok"):
                status = int(extra.pop("http_status", 503))
            body.update(extra)
        return status, body

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
        logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per /health probe is noise
        sys.exit(asyncio.run(self.main()))

    async def main(self) -> int:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._begin_drain, self.settings.stop_grace, signal.Signals(sig).name)
        for hook in self.on_start:
            await hook()
        server = None
        if self.settings.port is not None:
            server = await serve(
                self._public_handler,
                "127.0.0.1",
                self.settings.port,
                process_request=self._process_request,
                max_size=protocol.MAX_FRAME_BYTES,
                compression=None,
            )
            self.port = server.sockets[0].getsockname()[1]
            log.info("%s listening on 127.0.0.1:%s", self.settings.instance, self.port)
        link = asyncio.create_task(self._link_forever()) if self.settings.socket else None
        await self._stop.wait()
        if link is not None:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for hook in self.on_stop:
            with contextlib.suppress(Exception):
                await hook()
        return self._exit_code

    def _begin_drain(self, grace: float, why: str) -> None:
        if self.runner.draining:
            return
        log.info("%s: draining (%s), grace %.1fs", self.settings.instance, why, grace)
        self._drain_task = asyncio.ensure_future(self._drain_and_stop(grace))

    async def _drain_and_stop(self, grace: float) -> None:
        finished = await self.runner.drain(grace)
        if not finished:
            log.warning("in-flight tasks did not finish within %.1fs; cancelled", grace)
        assert self._stop is not None
        self._stop.set()

    def stop(self, code: int = 0) -> None:
        self._exit_code = code
        if self._stop is not None:
            self._stop.set()

    # ------------------------------------------------------------------ public port

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == self.settings.health_path:
            status, body = self.health()
            data = json.dumps(body).encode()
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return Response(status, "OK" if status == 200 else "Service Unavailable", headers, data)
        if self.settings.public != "open" and self.settings.worker_token:
            auth = request.headers.get("Authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.settings.worker_token.encode()
            ):
                return connection.respond(401, "missing or wrong bearer token (the worker token in the state dir)\n")
        return None

    async def _public_handler(self, connection: ServerConnection) -> None:
        await self._serve_frames(connection.recv, connection.send)

    async def _serve_frames(
        self, recv: Callable[[], Awaitable[Any]], send_raw: Callable[[str], Awaitable[None]]
    ) -> None:
        """Tasks in, events/results out, over one connection (a client or the supervisor link)."""
        origin = next(self._origins)

        async def send(frame: dict[str, Any]) -> None:
            await send_raw(protocol.encode(frame))

        try:
            while True:
                try:
                    raw = await recv()
                except ConnectionClosed:
                    return
                try:
                    frame = protocol.decode(raw)
                except ProtocolError as exc:
                    await send(error_frame(exc.code, str(exc), exc.frame_id))
                    continue
                kind = frame["type"]
                if kind == "task":
                    self.runner.submit(frame, send, origin)
                elif kind == "cancel":
                    self.runner.cancel(frame["id"], origin)
                elif kind in ("drain", "shutdown"):
                    self._begin_drain(float(frame.get("grace_s", self.settings.stop_grace)), f"{kind} frame")
                elif kind == "welcome":
                    continue
                elif kind == "error":
                    log.warning("peer error: %s %s", frame["code"], frame["message"])
                else:
                    await send(
                        error_frame(ErrorCode.UNSUPPORTED, f"a worker does not accept {kind} frames", frame.get("id"))
                    )
        finally:
            self.runner.cancel_origin(origin)

    # ------------------------------------------------------------------ supervisor link

    def _hello(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "hello",
            "protocol": protocol.PROTOCOL_VERSION,
            "worker": self.settings.worker,
            "instance": self.settings.instance,
            "pid": os.getpid(),
            "port": self.port,
            "capabilities": self.capabilities,
            "max_concurrency": self.settings.max_concurrency,
        }
        if self.settings.link_token:
            frame["token"] = self.settings.link_token
        return frame

    async def _link_forever(self) -> None:
        """Keep one link to the supervisor; reconnect with backoff when it drops."""
        delay = 0.05
        while True:
            try:
                await self._link_once()
                delay = 0.05
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus):
                    log.error("supervisor refused the link: %s", exc)
                log.info("link to supervisor down (%s); retrying in %.2fs", type(exc).__name__, delay)
            except LinkRefused as exc:
                log.error("supervisor refused registration: %s", exc)
                self.stop(2)  # wrong protocol or identity: exit non-zero, do not retry forever
                return
            self._link_connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _link_once(self) -> None:
        assert self.settings.socket is not None
        async with unix_connect(
            self.settings.socket,
            uri="ws://localhost/api/link",
            max_size=protocol.MAX_FRAME_BYTES,
            ping_interval=None,  # heartbeats do this job
            compression=None,
            open_timeout=5,
        ) as ws:
            await ws.send(protocol.encode(self._hello()))
            first = protocol.decode(await asyncio.wait_for(ws.recv(), 10))
            if first["type"] == "error":
                raise LinkRefused(f"{first['code']}: {first['message']}")
            self._link_connected = True
            beats = asyncio.create_task(
                self._heartbeats(ws.send, float(first.get("heartbeat_interval", self.settings.heartbeat_interval)))
            )
            try:
                await self._serve_frames(ws.recv, ws.send)
            finally:
                beats.cancel()

    async def _heartbeats(self, send: Callable[[str], Awaitable[None]], interval: float) -> None:
        """From the event loop on purpose: a blocked loop stops them, and that is how hangs are seen."""
        for seq in itertools.count(1):
            frame = protocol.heartbeat_frame(seq, self.runner.active, self.runner.queued, rss_mb())
            frame["ok"], frame["failed"] = self.runner.ok, self.runner.failed
            if self.stats is not None:
                frame["stats"] = self.stats()
            try:
                await send(protocol.encode(frame))
            except ConnectionClosed:
                return
            # on the wall-clock grid of the interval: every worker's heartbeat lands in the same
            # few milliseconds, and the supervisor handles them in one wake-up with warm caches
            # instead of one cold wake-up each (measured: docs/BENCHMARKS.md)
            await asyncio.sleep(interval - time.time() % interval)


class LinkRefused(Exception):
    pass
