"""One worker instance: its state (changed in one place), process, link and counters."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cogoctl.profile import WorkerConfig
from cogoctl.supervisor.states import ALIVE, RestartTracker, State, check_transition

if TYPE_CHECKING:
    from cogoctl.supervisor.logs import RotatingLog
    from cogoctl.supervisor.process import ManagedProcess


class Want(enum.StrEnum):
    RUN = "run"
    STOP = "stop"


class Instance:
    def __init__(
        self,
        worker: WorkerConfig,
        index: int,
        log: RotatingLog,
        on_change: Callable[[Instance, State, State, str], None],
    ) -> None:
        self.worker = worker
        self.index = index
        self.id = f"{worker.name}-{index}"
        self.log = log
        self._on_change = on_change
        self.state = State.STOPPED
        self.reason = "not started"
        self.state_since = time.monotonic()
        self.want = Want.STOP
        self.wake = asyncio.Event()  # set when `want` or a restart request changes
        self.restart_request: str | None = None  # reason of a requested (clean) restart
        self.kill_request: tuple[str, bool] | None = None  # (reason, hung) from the health monitor
        self.proc: ManagedProcess | None = None
        self.pid: int | None = None
        self.port: int | None = worker.port if index == 0 else None
        self.started_at: float | None = None  # monotonic
        self.started_wall: float | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.tracker = RestartTracker(worker.restart)
        self.task: asyncio.Task[None] | None = None
        self.link_token: str | None = None
        # filled by the health monitor / link
        self.link: Any = None
        self.registered = asyncio.Event()
        self.capabilities: tuple[str, ...] = worker.capabilities
        self.max_concurrency = worker.max_concurrency
        self.last_heartbeat: float | None = None  # monotonic
        self.heartbeat_seq = 0
        self.load: dict[str, Any] = {"active": 0, "queued": 0}
        self.probe_failures = 0
        self.last_probe_ms: float | None = None
        self.health_answer: Any = None
        self.metrics: dict[str, Any] = {}
        self.draining = False

    # -- the one place state changes --------------------------------------------------------

    def set_state(self, new: State, reason: str) -> None:
        old = self.state
        check_transition(old, new)
        self.state = new
        self.reason = reason
        self.state_since = time.monotonic()
        self._on_change(self, old, new, reason)

    def request(self, want: Want) -> None:
        self.want = want
        self.wake.set()

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    @property
    def uptime(self) -> float | None:
        if self.started_at is None or self.proc is None or not self.proc.alive:
            return None
        return time.monotonic() - self.started_at

    def snapshot(self) -> dict[str, Any]:
        m = self.metrics
        hb_age = None if self.last_heartbeat is None else round(time.monotonic() - self.last_heartbeat, 3)
        uptime = self.uptime
        return {
            "name": self.worker.name,
            "instance": self.id,
            "state": self.state.value,
            "reason": self.reason,
            "pid": self.pid if self.alive else None,
            "port": self.port,
            "restarts": self.restarts,
            "uptime_s": None if uptime is None else round(uptime, 3),
            "cpu_percent": m.get("cpu_percent") if self.alive else None,
            "rss_mb": m.get("rss_mb") if self.alive else None,
            "threads": m.get("threads") if self.alive else None,
            "fds": m.get("fds") if self.alive else None,
            "children": m.get("children") if self.alive else None,
            "exit_code": self.exit_code,
            "state_for_s": round(time.monotonic() - self.state_since, 3),
            "runtime": self.worker.runtime,
            "registered": self.registered.is_set(),
            "last_heartbeat_age_s": hb_age,
            "active": self.load.get("active", 0),
            "queued": self.load.get("queued", 0),
            "tasks_ok": self.load.get("ok"),
            "tasks_failed": self.load.get("failed"),
            "heartbeat_seq": self.heartbeat_seq,
            "capabilities": list(self.capabilities),
        }
