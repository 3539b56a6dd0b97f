"""Running tasks: capability handlers, a concurrency limit, timeouts, cancellation, errors.

Shared by the supervisor link and the public port; it knows nothing of sockets: it gets a frame
and a `send` coroutine for the answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cogoctl.aio import wait_event
from cogoctl.protocol import ErrorCode, error_frame, event_frame, result_frame

log = logging.getLogger("cogoctl.worker")

Send = Callable[[dict[str, Any]], Awaitable[None]]


class TaskError(Exception):
    """Raise from a handler to answer with a structured error."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class TaskContext:
    def __init__(self, frame: dict[str, Any], send: Send) -> None:
        self.id: str = frame["id"]
        self.capability: str = frame["capability"]
        self.action: str = frame["action"]
        self.payload: dict[str, Any] = frame.get("payload") or {}
        self.timeout_s: float | None = frame.get("timeout_s")
        self.priority: str = frame.get("priority", "normal")
        self._send = send

    async def emit(self, event: str, data: Any) -> None:
        """Send an event (stdout, stderr, progress, log) for this task."""
        await self._send(event_frame(self.id, event, data))


Handler = Callable[[TaskContext], Awaitable[Any]]


class TaskRunner:
    def __init__(self, max_concurrency: int) -> None:
        self.handlers: dict[tuple[str, str | None], Handler] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self.active = 0
        self.queued = 0
        self.ok = 0
        self.failed = 0
        self.draining = False
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._replies: set[asyncio.Task[None]] = set()

    def _reply(self, send: Send, frame: dict[str, Any]) -> None:
        task = asyncio.ensure_future(_safe(send, frame))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    @property
    def capabilities(self) -> list[str]:
        return sorted({cap for cap, _ in self.handlers})

    def register(self, capability: str, action: str | None, fn: Handler) -> None:
        self.handlers[(capability, action)] = fn

    def _find(self, capability: str, action: str) -> Handler | None:
        return self.handlers.get((capability, action)) or self.handlers.get((capability, None))

    def submit(self, frame: dict[str, Any], send: Send, origin: int) -> None:
        """Start a task; its answer (result or error) goes through `send`. Never raises."""
        tid = frame["id"]
        key = (origin, tid)
        if self.draining:
            self._reply(send, error_frame(ErrorCode.OVERLOADED, "worker is draining", tid))
            return
        if key in self._tasks:
            self._reply(send, error_frame(ErrorCode.BAD_REQUEST, f"task id {tid!r} is already running", tid))
            return
        handler = self._find(frame["capability"], frame["action"])
        if handler is None:
            msg = f"no handler for capability {frame['capability']!r} action {frame['action']!r} (have: {', '.join(self.capabilities) or 'none'})"
            self._reply(send, error_frame(ErrorCode.UNSUPPORTED, msg, tid))
            return
        self._idle.clear()
        task = asyncio.create_task(self._run(handler, frame, send, key))
        self._tasks[key] = task

    def cancel(self, tid: str, origin: int) -> bool:
        task = self._tasks.get((origin, tid))
        if task is None:
            return False
        task.cancel()
        return True

    def cancel_origin(self, origin: int) -> None:
        """A client went away: cancel what it started."""
        for (o, _), task in list(self._tasks.items()):
            if o == origin:
                task.cancel()

    async def _run(self, handler: Handler, frame: dict[str, Any], send: Send, key: tuple[int, str]) -> None:
        ctx = TaskContext(frame, send)
        answer: dict[str, Any]
        self.queued += 1
        try:
            async with self._slots:
                self.queued -= 1
                self.active += 1
                start = time.perf_counter()
                try:
                    payload = await asyncio.wait_for(handler(ctx), ctx.timeout_s)
                    answer = result_frame(ctx.id, payload, (time.perf_counter() - start) * 1000)
                    self.ok += 1
                except TimeoutError:
                    answer = error_frame(
                        ErrorCode.TIMEOUT, f"task exceeded {ctx.timeout_s:g} s", ctx.id, timeout_s=ctx.timeout_s
                    )
                    self.failed += 1
                except TaskError as exc:
                    answer = error_frame(exc.code, str(exc), ctx.id, **exc.details)
                    self.failed += 1
                except asyncio.CancelledError:
                    answer = error_frame(ErrorCode.CANCELLED, "task cancelled", ctx.id)
                    self.failed += 1
                except Exception as exc:
                    log.exception("task %s failed", ctx.id)
                    answer = error_frame(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", ctx.id)
                    self.failed += 1
                finally:
                    self.active -= 1
        except asyncio.CancelledError:  # cancelled while queued
            self.queued -= 1
            answer = error_frame(ErrorCode.CANCELLED, "task cancelled", ctx.id)
        finally:
            self._tasks.pop(key, None)
            if not self._tasks:
                self._idle.set()
        await _safe(send, answer)

    async def drain(self, grace: float) -> bool:
        """Stop taking tasks; wait up to `grace` for in-flight ones. True if all finished."""
        self.draining = True
        if await wait_event(self._idle, grace):
            return True
        for task in list(self._tasks.values()):
            task.cancel()
        await wait_event(self._idle, 1.0)
        return False


async def _safe(send: Send, frame: dict[str, Any]) -> None:
    try:
        await send(frame)
    except Exception:  # the peer is gone: nobody to answer
        log.debug("could not send %s for %s", frame.get("type"), frame.get("id"))
