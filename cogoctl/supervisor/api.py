"""Control API routes (the same on the Unix socket and on the optional TCP listener)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cogoctl.protocol import ErrorCode, error_frame
from cogoctl.supervisor.dispatch import Sink
from cogoctl.supervisor.http import HTTPError, Request, Response, Stream, WebSocket, WebSocketClosed, WebSocketRoute
from cogoctl.supervisor.instance import Instance
from cogoctl.supervisor.manager import NotFound
from cogoctl.supervisor.states import DOWN, State

if TYPE_CHECKING:
    from cogoctl.supervisor.daemon import Daemon

Route = tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


class Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.manager = daemon.manager
        self.routes: list[Route] = []
        add = self._add
        add("GET", r"/api/workers/status", self.status)
        add("POST", r"/api/workers/execute", self.execute)
        add("GET", r"/api/workers/(?P<target>[^/]+)/health", self.health)
        add("POST", r"/api/workers/(?P<target>[^/]+)/(?P<action>start|stop|restart)", self.control)
        add("GET", r"/api/workers/(?P<target>[^/]+)/logs", self.logs)
        add("GET", r"/api/events", self.events)
        add("GET", r"/api/config", self.config)
        add("POST", r"/api/shutdown", self.shutdown)
        add("POST", r"/api/reload", self.reload)
        add("GET", r"/openapi.json", self.openapi)
        add("GET", r"/api/ping", self.ping)
        add("GET", r"/api/link", self.link)
        add("GET", r"/api/tasks/stream", self.task_stream)
        add("POST", r"/api/workers/(?P<target>[^/]+)/scale", self.scale)
        add("GET", r"/metrics", self.metrics)

    def _add(self, method: str, pattern: str, handler: Callable[..., Awaitable[Any]]) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    async def __call__(self, req: Request) -> Response | Stream | WebSocketRoute:
        path_matched = False
        for method, pattern, handler in self.routes:
            m = pattern.match(req.path)
            if not m:
                continue
            path_matched = True
            if method != req.method:
                continue
            return await handler(req, **m.groupdict())
        if path_matched:
            raise HTTPError(ErrorCode.BAD_REQUEST, f"method {req.method} not allowed on {req.path}")
        raise HTTPError(ErrorCode.NOT_FOUND, f"no route {req.method} {req.path} (see GET /openapi.json)")

    def _resolve(self, target: str) -> list[Instance]:
        try:
            return self.manager.resolve(target)
        except NotFound as exc:
            raise HTTPError(ErrorCode.NOT_FOUND, str(exc.args[0])) from None

    # ------------------------------------------------------------------ routes

    async def ping(self, req: Request) -> Response:
        return Response(body={"ok": True, "pid": self.daemon.pid, "profile": self.manager.profile.path})

    async def status(self, req: Request) -> Response:
        target = req.query.get("name") or None
        insts = self._resolve(target) if target else self.manager.resolve("all")
        d = self.daemon.dispatcher
        workers = [{**i.snapshot(), "inflight": d.load(i), "draining": i.draining} for i in insts]
        return Response(body={"workers": workers, "balancer": d.view(), "supervisor": self.daemon.describe()})

    # -- tasks ---------------------------------------------------------------------------

    async def execute(self, req: Request) -> Response | Stream:
        """POST {workerType|capability, task, priority, timeout_s, idempotent} -> the result.
        With ?stream=1: NDJSON over a chunked answer, events then the final frame; hanging up cancels."""
        sink = Sink()
        job = self.daemon.dispatcher.submit(req.json(), sink)
        if req.flag("stream"):
            return Stream(self._stream_job(job, sink))
        try:
            final = await asyncio.shield(sink.final)
        except asyncio.CancelledError:
            self.daemon.dispatcher.cancel(job, ErrorCode.CANCELLED, "client went away")
            raise
        events = []
        while not sink.frames.empty():
            frame = sink.frames.get_nowait()
            if frame["type"] == "event" and len(events) < 10_000:
                events.append({"event": frame["event"], "data": frame.get("data")})
        if final["type"] == "error":
            code = ErrorCode(final["code"])
            body = {"error": {"code": code.value, "message": final["message"], "details": final.get("details")},
                    "id": final.get("id"), "instance": final.get("instance")}  # fmt: skip
            return Response(code.http_status, body)
        return Response(body={"id": final["id"], "instance": final.get("instance"), "result": final.get("payload"),
                              "duration_ms": final.get("duration_ms"), "events": events})  # fmt: skip

    async def _stream_job(self, job: Any, sink: Sink) -> AsyncIterator[bytes]:
        try:
            yield _ndjson({"type": "accepted", "id": job.client_id, "worker": job.worker})
            while True:
                frame = await sink.frames.get()
                yield _ndjson(frame)
                if frame["type"] in ("result", "error"):
                    return
        finally:
            if not sink.final.done():  # the client hung up (Ctrl-C on exec): cancel on the worker
                self.daemon.dispatcher.cancel(job, ErrorCode.CANCELLED, "client went away")

    async def task_stream(self, req: Request) -> WebSocketRoute:
        return WebSocketRoute(self._ws_task)

    async def _ws_task(self, ws: WebSocket) -> None:
        raw = await ws.recv()
        if raw is None:
            return
        sink = Sink()
        try:
            request = json.loads(raw)
            job = self.daemon.dispatcher.submit(request, sink)
        except (ValueError, HTTPError) as exc:
            err = (
                exc
                if isinstance(exc, HTTPError)
                else HTTPError(ErrorCode.BAD_REQUEST, f"first frame is not JSON: {exc}")
            )
            await ws.send(json.dumps(error_frame(err.code, str(err), None, **err.details)))
            return
        await ws.send(json.dumps({"type": "accepted", "id": job.client_id, "worker": job.worker}))

        async def client_frames() -> None:
            while True:
                msg = await ws.recv()
                if msg is None:
                    return
                try:
                    if json.loads(msg).get("type") == "cancel":
                        self.daemon.dispatcher.cancel(job, ErrorCode.CANCELLED, "cancelled by the client")
                except (ValueError, AttributeError):
                    continue

        reader = asyncio.create_task(client_frames())
        try:
            while True:
                getter = asyncio.ensure_future(sink.frames.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if not sink.final.done():
                        self.daemon.dispatcher.cancel(job, ErrorCode.CANCELLED, "client went away")
                    return
                frame = getter.result()
                await ws.send(json.dumps(frame))
                if frame["type"] in ("result", "error"):
                    return
        except WebSocketClosed:
            if not sink.final.done():
                self.daemon.dispatcher.cancel(job, ErrorCode.CANCELLED, "client went away")
        finally:
            reader.cancel()

    async def scale(self, req: Request, target: str) -> Response:
        if target not in self.manager.workers:
            raise HTTPError(ErrorCode.NOT_FOUND, f"no worker named {target!r} (scale takes a worker name)")
        body = req.json()
        count = body.get("instances") if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 256:
            raise HTTPError(ErrorCode.BAD_REQUEST, "'instances' must be an integer from 0 to 256")
        ok = await self.daemon.scaler.scale(target, count, "scale requested")
        snaps = [i.snapshot() for i in self.manager.by_worker[target]]
        return Response(200 if ok else 409, {"ok": ok, "action": "scale", "instances": snaps})

    async def health(self, req: Request, target: str) -> Response:
        insts = self._resolve(target)
        out = []
        for inst in insts:
            snap = inst.snapshot()
            answer = None
            probe_error = None
            if inst.worker.probes and inst.port is not None and inst.alive:
                _ok, probe_error = await self.manager.probe(inst, inst.worker.health_check.timeout)  # type: ignore[union-attr]
                answer = inst.health_answer
                probe_error = probe_error or None
            out.append(
                {
                    **snap,
                    "health": answer,
                    "probe_error": probe_error,
                    "probe_ms": inst.last_probe_ms,
                    "probe_failures": inst.probe_failures,
                    "monitor": self.daemon.monitor_view(inst),
                }
            )
        return Response(body={"instances": out})

    async def control(self, req: Request, target: str, action: str) -> Response:
        insts = self._resolve(target)
        wait = req.query.get("wait", "1") not in ("0", "false", "no")
        m = self.manager
        if action == "start":
            for inst in insts:
                m.start_instance(inst, "start requested")
            ok = await self._wait(insts, wait, lambda i: i.state in (State.RUNNING, State.FATAL, State.EXITED))
            ok = ok and all(i.state is State.RUNNING for i in insts) if wait else ok
        elif action == "stop":
            for inst in insts:
                m.stop_instance(inst)
            ok = await self._wait(insts, wait, lambda i: i.state in DOWN and (i.task is None or i.task.done()))
        else:
            ok = True
            if wait:
                ok = await self.daemon.rolling_restart(insts)
            else:
                for inst in insts:
                    m.restart_instance(inst, "restart requested")
        snaps = [i.snapshot() for i in insts]
        status = 200 if ok else 409
        return Response(status, {"ok": ok, "action": action, "waited": wait, "instances": snaps})

    async def _wait(self, insts: list[Instance], wait: bool, done: Callable[[Instance], bool]) -> bool:
        if not wait:
            return True
        timeout = max(i.worker.start_timeout + i.worker.stop_timeout for i in insts) + 5 if insts else 0
        return await self.manager.wait_for(lambda: all(done(i) for i in insts), timeout)

    async def logs(self, req: Request, target: str) -> Response | Stream:
        insts = self._resolve(target)
        n = req.int_arg("n", 50, 0, 100_000)
        follow = req.flag("follow")
        lines: list[tuple[str, str]] = []
        for inst in insts:
            lines += [(inst.id, line) for line in inst.log.tail(n)]
        lines.sort(key=lambda item: item[1][:24])  # by timestamp across instances
        lines = lines[-n:] if n else []
        if not follow:
            return Response(body={"lines": [{"instance": i, "line": line} for i, line in lines]})
        queues = [(inst.id, inst.log.fanout.subscribe()) for inst in insts]

        async def gen() -> AsyncIterator[bytes]:
            try:
                for i, line in lines:
                    yield _ndjson({"instance": i, "line": line})
                merged: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
                pumps = [asyncio.create_task(_pump(iid, q, merged)) for iid, q in queues]
                try:
                    while True:
                        iid, item = await merged.get()
                        if item is None:
                            continue
                        yield _ndjson({"instance": iid, "line": item})
                finally:
                    for p in pumps:
                        p.cancel()
            finally:
                for inst, (_, q) in zip(insts, queues, strict=True):
                    inst.log.fanout.unsubscribe(q)

        return Stream(gen())

    async def events(self, req: Request) -> Response | Stream:
        n = req.int_arg("n", 50, 0, 100_000)
        events = self.manager.events.tail(n)
        if not req.flag("follow"):
            return Response(body={"events": events})
        fanout = self.manager.events.fanout
        q = fanout.subscribe()

        async def gen() -> AsyncIterator[bytes]:
            try:
                for ev in events:
                    yield _ndjson(ev)
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    yield (str(item) + "\n").encode()
            finally:
                fanout.unsubscribe(q)

        return Stream(gen())

    async def config(self, req: Request) -> Response:
        return Response(body=self.manager.profile.to_dict())

    async def reload(self, req: Request) -> Response:
        """{"dry_run": bool, "environ": {...}}: re-read the profile and apply the difference."""
        from cogoctl.errors import CogoError

        body = req.json() if req.body else {}
        if not isinstance(body, dict):
            raise HTTPError(ErrorCode.BAD_REQUEST, "the request must be a JSON object")
        environ = body.get("environ")
        if environ is not None and not (
            isinstance(environ, dict) and all(isinstance(v, str) for v in environ.values())
        ):
            raise HTTPError(ErrorCode.BAD_REQUEST, "'environ' must map names to strings")
        try:
            result = await self.daemon.reloader.reload(environ, bool(body.get("dry_run", False)))
        except CogoError as exc:
            self.manager.events.emit("reload", refused=str(exc))
            raise HTTPError(ErrorCode.BAD_REQUEST, str(exc)) from None
        return Response(body=result)

    async def shutdown(self, req: Request) -> Response:
        self.daemon.request_shutdown("shutdown requested through the API")
        return Response(body={"ok": True, "pid": self.daemon.pid})

    async def link(self, req: Request) -> WebSocketRoute:
        if req.peer != "unix":
            raise HTTPError(ErrorCode.UNAUTHORIZED, "worker links are accepted on the unix socket only")
        return WebSocketRoute(self.daemon.links.serve)

    async def metrics(self, req: Request) -> Response:
        from cogoctl.supervisor import prom

        body, ctype = prom.render(self.manager, self.daemon.metric_collectors)
        return Response(body=body, content_type=ctype)

    async def openapi(self, req: Request) -> Response:
        return Response(body=OPENAPI_PATH.read_bytes(), content_type="application/json")


async def _pump(iid: str, q: asyncio.Queue[object], merged: asyncio.Queue[tuple[str, object]]) -> None:
    while True:
        item = await q.get()
        await merged.put((iid, item))
        if item is None:
            return


def _ndjson(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
