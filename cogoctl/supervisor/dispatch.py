"""The LoadBalancer's I/O side: tasks from clients, through per-worker queues, over worker links.

Every accepted task is answered exactly once (result or error), whatever happens underneath:
- queue full -> OVERLOADED at once; no RUNNING instance able to take it -> it waits in the queue;
- deadline -> TIMEOUT, and a `cancel` frame to the worker if it was dispatched;
- client gone -> `cancel` to the worker;
- the instance's link drops (crash, hang kill) -> WORKER_LOST, or re-queued once when idempotent.
A cancelled or timed-out task keeps its instance slot until the worker answers the cancel, so
max_concurrency is never exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cogoctl import protocol
from cogoctl.protocol import ErrorCode, Priority, error_frame
from cogoctl.supervisor.balancer import Chooser, QueueFull, Slot, TaskQueue
from cogoctl.supervisor.http import HTTPError, WebSocketClosed
from cogoctl.supervisor.instance import Instance
from cogoctl.supervisor.link import LinkServer
from cogoctl.supervisor.manager import Manager
from cogoctl.supervisor.states import State

log = logging.getLogger("cogoctl.dispatch")
DEFAULT_TIMEOUT = 300.0
MAX_EVENTS_KEPT = 10_000


class Sink:
    """Where a task's frames go. `done` is called exactly once."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.final: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def event(self, frame: dict[str, Any]) -> None:
        self.frames.put_nowait(frame)

    def done(self, frame: dict[str, Any]) -> None:
        if not self.final.done():
            self.final.set_result(frame)
        self.frames.put_nowait(frame)


@dataclass
class Job:
    id: str
    client_id: str
    worker: str
    frame: dict[str, Any]
    priority: Priority
    deadline: float
    timeout_s: float
    idempotent: bool
    sink: Sink
    seq: int = 0
    attempts: int = 0
    instance: Instance | None = None
    timer: asyncio.TimerHandle | None = None
    created: float = field(default_factory=time.monotonic)


class Dispatcher:
    def __init__(self, manager: Manager, links: LinkServer) -> None:
        self.m = manager
        links.router = self
        manager.listeners.append(self.on_state)
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, TaskQueue] = {}
        self.choosers: dict[str, Chooser] = {}
        self.inflight: dict[str, set[str]] = {}  # instance id -> job ids it is working on
        self.abandoned: dict[str, set[str]] = {}  # instance id -> cancelled job ids not yet answered
        self.totals: Counter[str] = Counter()
        self.sessions: dict[tuple[str, str], str] = {}  # (worker, payload.session) -> instance id
        self.by_type: dict[str, Counter[str]] = {}
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        self._idle_waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ accounting

    def load(self, inst: Instance) -> int:
        return len(self.inflight.get(inst.id, ())) + len(self.abandoned.get(inst.id, ()))

    def queue(self, worker: str) -> TaskQueue:
        q = self.queues.get(worker)
        if q is None:
            cfg = self.m.workers[worker]
            q = self.queues[worker] = TaskQueue(cfg.queue_limit)
            self.choosers[worker] = Chooser(cfg.strategy)
        return q

    def _count(self, worker: str, what: str) -> None:
        self.totals[what] += 1
        self.by_type.setdefault(worker, Counter())[what] += 1

    def view(self) -> dict[str, Any]:
        per_type = {}
        for name in self.m.workers:
            q = self.queues.get(name)
            insts = self.m.by_worker.get(name, [])
            per_type[name] = {
                "queued": len(q) if q else 0,
                "inflight": sum(self.load(i) for i in insts),
                "strategy": self.m.workers[name].strategy,
                **dict(self.by_type.get(name, {})),
            }
        return {"workers": per_type, "totals": dict(self.totals)}

    # ------------------------------------------------------------------ submitting

    def submit(self, request: Any, sink: Sink) -> Job:
        """Validate and queue a request (see POST /api/workers/execute). Raises HTTPError."""
        if not isinstance(request, dict):
            raise HTTPError(ErrorCode.BAD_REQUEST, "the request must be a JSON object")
        task = request.get("task")
        if not isinstance(task, dict):
            raise HTTPError(ErrorCode.BAD_REQUEST, "'task' must be an object with 'action' and 'payload'")
        action = task.get("action", "run")
        payload = task.get("payload", {})
        if not isinstance(action, str) or not action:
            raise HTTPError(ErrorCode.BAD_REQUEST, "task.action must be a non-empty string")
        if not isinstance(payload, dict):
            raise HTTPError(ErrorCode.BAD_REQUEST, "task.payload must be an object")
        worker, capability = self._route(request.get("workerType"), request.get("capability") or task.get("capability"))
        try:
            priority = Priority(request.get("priority", "normal"))
        except ValueError:
            raise HTTPError(ErrorCode.BAD_REQUEST, "priority must be high, normal or low") from None
        timeout = request.get("timeout_s", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise HTTPError(ErrorCode.BAD_REQUEST, "timeout_s must be a number > 0")
        idempotent = bool(request.get("idempotent", task.get("idempotent", False)))
        client_id = str(task.get("id") or request.get("id") or "")
        jid = f"{self._prefix}-{next(self._ids)}"
        frame = protocol.task_frame(jid, capability, action, payload, float(timeout), priority.value)
        protocol.validate(frame)
        q = self.queue(worker)
        job = Job(
            jid,
            client_id or jid,
            worker,
            frame,
            priority,
            time.monotonic() + float(timeout),
            float(timeout),
            idempotent,
            sink,
        )
        try:
            job.seq = q.push(jid, priority)
        except QueueFull as exc:
            self._count(worker, "rejected")
            raise HTTPError(ErrorCode.OVERLOADED, f"{worker}: {exc}; retry later", queue_limit=q.limit) from None
        self.jobs[jid] = job
        self._count(worker, "accepted")
        job.timer = asyncio.get_running_loop().call_at(job.deadline, self._on_deadline, jid)
        self.pump(worker)
        return job

    def _route(self, worker_type: Any, capability: Any) -> tuple[str, str]:
        if worker_type is not None:
            if not isinstance(worker_type, str) or worker_type not in self.m.workers:
                known = ", ".join(self.m.workers) or "none"
                raise HTTPError(ErrorCode.NOT_FOUND, f"no worker type {worker_type!r} (workers: {known})")
            caps = self.m.workers[worker_type].capabilities or tuple(
                c for i in self.m.by_worker[worker_type] for c in i.capabilities
            )
            if capability is None:
                if not caps:
                    raise HTTPError(
                        ErrorCode.BAD_REQUEST, f"{worker_type} declares no capability; name one in 'capability'"
                    )
                return worker_type, caps[0]
            if not isinstance(capability, str):
                raise HTTPError(ErrorCode.BAD_REQUEST, "capability must be a string")
            if caps and capability not in caps:
                raise HTTPError(
                    ErrorCode.UNSUPPORTED, f"{worker_type} does not offer {capability!r} (it offers {', '.join(caps)})"
                )
            return worker_type, capability
        if not isinstance(capability, str) or not capability:
            raise HTTPError(ErrorCode.BAD_REQUEST, "name a 'workerType' or a 'capability'")
        offering = [
            name
            for name, cfg in self.m.workers.items()
            if capability in cfg.capabilities or any(capability in i.capabilities for i in self.m.by_worker[name])
        ]
        if not offering:
            raise HTTPError(ErrorCode.UNSUPPORTED, f"no worker offers capability {capability!r}")

        # the type with the most room: free slots first, then the shortest queue
        def room(name: str) -> tuple[int, int]:
            free = sum(max(0, i.max_concurrency - self.load(i)) for i in self.m.by_worker[name] if self._eligible(i))
            return (-free, len(self.queues.get(name, ())))

        return min(offering, key=room), capability

    # ------------------------------------------------------------------ dispatching

    @staticmethod
    def _eligible(inst: Instance) -> bool:
        return inst.state is State.RUNNING and inst.link is not None and not inst.draining

    def pump(self, worker: str) -> None:
        q = self.queues.get(worker)
        if not q:
            return
        chooser = self.choosers[worker]
        while len(q):
            jid = q.peek()
            if jid is None:
                return
            job = self.jobs[jid]
            slots = [
                Slot(i.id, self.load(i), i.max_concurrency, i)
                for i in self.m.by_worker.get(worker, [])
                if self._eligible(i)
            ]
            session = job.frame["payload"].get("session")
            home = self.sessions.get((worker, session)) if isinstance(session, str) else None
            if home is not None and any(s.id == home for s in slots):
                slots = [s for s in slots if s.id == home]  # a session lives in one instance
            chosen = chooser.choose(slots)
            if chosen is None:
                return
            q.pop()
            if isinstance(session, str):
                self.sessions[(worker, session)] = chosen.id
            inst: Instance = chosen.ref  # type: ignore[assignment]
            job.instance = inst
            job.attempts += 1
            self.inflight.setdefault(inst.id, set()).add(jid)
            remaining = max(0.001, job.deadline - time.monotonic())
            job.frame["timeout_s"] = round(remaining, 3)
            try:
                inst.link.send_nowait(protocol.encode(job.frame))
            except WebSocketClosed:
                self.on_link_lost(inst)

    def on_worker_frame(self, inst: Instance, frame: dict[str, Any]) -> None:
        jid = frame.get("id")
        kind = frame["type"]
        if not isinstance(jid, str):
            return
        job = self.jobs.get(jid)
        if job is None or job.instance is not inst:
            if kind in ("result", "error"):
                gone = self.abandoned.get(inst.id)
                if gone is not None and jid in gone:
                    gone.discard(jid)
                    self.pump(inst.worker.name)
            return
        if kind == "event":
            job.sink.event({**frame, "id": job.client_id})
            return
        self.inflight.get(inst.id, set()).discard(jid)
        if kind == "result":
            self._count(job.worker, "success")
        else:
            self._count(job.worker, "timeout" if frame.get("code") == "TIMEOUT" else "error")
        self._finish(job, {**frame, "id": job.client_id, "instance": inst.id})
        self.pump(job.worker)

    def on_link_lost(self, inst: Instance) -> None:
        self.abandoned.pop(inst.id, None)
        lost = self.inflight.pop(inst.id, set())
        for jid in sorted(lost):
            job = self.jobs.get(jid)
            if job is None:
                continue
            job.instance = None
            if job.idempotent and job.attempts < 2 and time.monotonic() < job.deadline:
                self._count(job.worker, "retried")
                self.queue(job.worker).push(jid, job.priority, seq=job.seq, force=True)
            else:
                self._count(job.worker, "lost")
                reason = inst.reason if inst.state is not State.RUNNING else "link lost"
                self._finish(job, error_frame(ErrorCode.WORKER_LOST, f"{inst.id} was lost while running the task ({reason})",
                                              job.client_id, instance=inst.id))  # fmt: skip
        self.pump(inst.worker.name)

    def on_state(self, inst: Instance, old: State, new: State, reason: str) -> None:
        if new is State.RUNNING and inst.worker.name in self.m.workers:
            # new capacity: later in this loop iteration, after the state change settles
            asyncio.get_running_loop().call_soon(self.pump, inst.worker.name)

    # ------------------------------------------------------------------ ending tasks

    def cancel(self, job: Job, code: ErrorCode, message: str) -> None:
        if job.id not in self.jobs:
            return
        q = self.queues.get(job.worker)
        if q is not None and q.remove(job.id):
            pass
        elif job.instance is not None:
            inst = job.instance
            self.inflight.get(inst.id, set()).discard(job.id)
            self.abandoned.setdefault(inst.id, set()).add(job.id)
            if inst.link is not None:
                with contextlib.suppress(WebSocketClosed):
                    inst.link.send_nowait(protocol.encode({"type": "cancel", "id": job.id}))
        self._count(job.worker, "timeout" if code is ErrorCode.TIMEOUT else "cancelled")
        self._finish(
            job, error_frame(code, message, job.client_id, **({"instance": job.instance.id} if job.instance else {}))
        )

    def _on_deadline(self, jid: str) -> None:
        job = self.jobs.get(jid)
        if job is not None:
            where = "in the queue" if job.instance is None else f"on {job.instance.id}"
            self.cancel(job, ErrorCode.TIMEOUT, f"task exceeded {job.timeout_s:g} s ({where})")

    def _finish(self, job: Job, frame: dict[str, Any]) -> None:
        self.jobs.pop(job.id, None)
        if job.timer is not None:
            job.timer.cancel()
        job.sink.done(frame)
        self._wake_idle()

    # ------------------------------------------------------------------ draining (rolling restart, scale down)

    async def drain(self, inst: Instance, timeout: float) -> bool:
        """Give `inst` no new tasks; wait until it has none in flight."""
        inst.draining = True
        self.m.notify()
        return await self.wait(lambda: self.load(inst) == 0, timeout)

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        if predicate():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._idle_waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return predicate()
        finally:
            with contextlib.suppress(ValueError):
                self._idle_waiters.remove(entry)

    def _wake_idle(self) -> None:
        for predicate, fut in list(self._idle_waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    def fail_all(self, message: str) -> None:
        """Supervisor shutdown: answer everything still open."""
        for job in list(self.jobs.values()):
            self.cancel(job, ErrorCode.WORKER_LOST, message)


class BalancerCollector:
    """/metrics: the balancer's queue depth, in-flight and totals per worker type."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        queued = GaugeMetricFamily(
            "cogo_balancer_queue_depth", "tasks waiting in the balancer's queue", labels=["worker"]
        )
        inflight = GaugeMetricFamily(
            "cogo_balancer_inflight", "tasks dispatched and not yet answered", labels=["worker", "instance"]
        )
        tasks = CounterMetricFamily("cogo_balancer_tasks", "tasks by outcome", labels=["worker", "outcome"])
        for name in self.d.m.workers:
            q = self.d.queues.get(name)
            queued.add_metric([name], float(len(q) if q else 0))
            for inst in self.d.m.by_worker.get(name, []):
                inflight.add_metric([name, inst.id], float(self.d.load(inst)))
            for outcome, n in self.d.by_type.get(name, {}).items():
                tasks.add_metric([name, outcome], float(n))
        yield from (queued, inflight, tasks)
