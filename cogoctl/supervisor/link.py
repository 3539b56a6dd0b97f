"""The supervisor's end of a worker's link: registration (hello), heartbeats, task frames.

A hello is accepted only with the per-instance token the supervisor put in that instance's
environment (compared in constant time), and only in a protocol version it speaks. A malformed
frame is logged and closes the link; the worker reconnects; the supervisor never dies of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from cogoctl import protocol
from cogoctl.protocol import ErrorCode, ProtocolError, error_frame
from cogoctl.supervisor.http import WebSocket, WebSocketClosed
from cogoctl.supervisor.instance import Instance

if TYPE_CHECKING:
    from cogoctl.supervisor.manager import Manager

log = logging.getLogger("cogoctl.link")
HELLO_TIMEOUT = 10.0


class FrameRouter(Protocol):
    """Who takes task answers coming back over links (the balancer)."""

    def on_worker_frame(self, inst: Instance, frame: dict[str, Any]) -> None: ...

    def on_link_lost(self, inst: Instance) -> None: ...


class Link:
    def __init__(self, ws: WebSocket, inst: Instance) -> None:
        self.ws = ws
        self.inst = inst
        self.peer_pid = ws.peer_pid()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(protocol.encode(frame))

    def send_nowait(self, text: str) -> None:
        self.ws.send_nowait(text)

    def close_from_supervisor(self) -> None:
        self.ws.abort()


class LinkServer:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.router: FrameRouter | None = None
        self.on_heartbeat: list[Any] = []

    async def serve(self, ws: WebSocket) -> None:
        m = self.manager
        try:
            raw = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT)
        except TimeoutError:
            await self._refuse(ws, ErrorCode.BAD_REQUEST, f"no hello within {HELLO_TIMEOUT:g}s")
            return
        if raw is None:
            return
        try:
            hello = protocol.decode(raw)
            if hello["type"] != "hello":
                raise ProtocolError(f"the first frame on a link must be hello, got {hello['type']}")
            protocol.check_version(hello)
        except ProtocolError as exc:
            await self._refuse(ws, exc.code, str(exc))
            return
        inst = m.instances.get(hello["instance"])
        token = hello.get("token") or ""
        if inst is None or not inst.link_token or not hmac.compare_digest(token.encode(), inst.link_token.encode()):
            await self._refuse(ws, ErrorCode.UNAUTHORIZED, "unknown instance or wrong link token")
            return
        if not inst.alive:
            await self._refuse(ws, ErrorCode.NOT_FOUND, f"instance {inst.id} is not running")
            return
        old = inst.link
        if old is not None:
            old.close_from_supervisor()
        link = Link(ws, inst)
        inst.link = link
        inst.capabilities = tuple(hello["capabilities"]) or inst.worker.capabilities
        inst.max_concurrency = int(hello.get("max_concurrency") or inst.worker.max_concurrency)
        if hello.get("port"):
            inst.port = int(hello["port"])
        inst.last_heartbeat = time.monotonic()
        inst.registered.set()
        m.events.emit("link", action="registered", worker=inst.worker.name, instance=inst.id, pid=hello["pid"],
                      peer_pid=link.peer_pid, port=inst.port, capabilities=list(inst.capabilities))  # fmt: skip
        m.notify()
        inst.wake.set()  # readiness waits on this
        reason = "closed by the worker"
        try:
            await link.send({"type": "welcome", "protocol": protocol.PROTOCOL_VERSION,
                             "heartbeat_interval": inst.worker.heartbeat_interval})  # fmt: skip
            while True:
                raw = await ws.recv()
                if raw is None:
                    break
                try:
                    frame = protocol.decode(raw)
                except ProtocolError as exc:
                    reason = f"malformed frame: {exc}"
                    log.warning("%s: %s; closing the link", inst.id, reason)
                    with contextlib.suppress(WebSocketClosed):
                        await link.send(error_frame(exc.code, str(exc), exc.frame_id))
                    break
                self._dispatch(inst, frame)
        except WebSocketClosed:
            pass
        finally:
            if inst.link is link:
                inst.link = None
                m.events.emit("link", action="closed", worker=inst.worker.name, instance=inst.id, reason=reason)
                if self.router is not None:
                    self.router.on_link_lost(inst)
                m.notify()
            await ws.close(1008 if reason.startswith("malformed") else 1000)

    def _dispatch(self, inst: Instance, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "heartbeat":
            inst.last_heartbeat = time.monotonic()
            inst.heartbeat_seq = frame["seq"]
            inst.load = {k: frame[k] for k in ("active", "queued", "rss_mb", "ok", "failed", "stats") if k in frame}
            for cb in self.on_heartbeat:
                cb(inst)
        elif kind in ("result", "event", "error"):
            if self.router is not None:
                self.router.on_worker_frame(inst, frame)
            elif kind == "error":
                log.warning("%s: error frame %s: %s", inst.id, frame["code"], frame["message"])
        else:
            log.warning("%s: unexpected %s frame on the link; ignored", inst.id, kind)

    async def _refuse(self, ws: WebSocket, code: ErrorCode, message: str) -> None:
        self.manager.events.emit("link", action="refused", code=code.value, reason=message, peer_pid=ws.peer_pid())
        with contextlib.suppress(WebSocketClosed):
            await ws.send(protocol.encode(error_frame(code, message)))
        await ws.close(1008, message[:100])
