"""The HealthMonitor: heartbeats, /health probes, resource limits, notification hooks.

It never touches processes: it marks instances UNHEALTHY (so the balancer skips them) and asks
the manager to restart them (`kill_instance`). A hung worker (heartbeats missed: blocked loop,
deadlock, SIGSTOP) is restarted with the short `hang_kill_timeout`, since it cannot act on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import urllib.parse
from typing import TYPE_CHECKING

from cogoctl.httpclient import ProbeError, http_request
from cogoctl.profile import HooksConfig
from cogoctl.supervisor.instance import Instance
from cogoctl.supervisor.states import State
from cogoctl.units import format_duration

if TYPE_CHECKING:
    from cogoctl.supervisor.manager import Manager

log = logging.getLogger("cogoctl.health")
_MB = 1024 * 1024


class HealthMonitor:
    def __init__(self, manager: Manager, hooks: HooksConfig) -> None:
        self.m = manager
        self.hooks = hooks
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._watchdogs: dict[str, asyncio.TimerHandle] = {}
        self._over_since: dict[tuple[str, str], float] = {}
        self._hook_tasks: set[asyncio.Task[None]] = set()
        manager.listeners.append(self.on_state)

    # ------------------------------------------------------------------ state changes

    def on_state(self, inst: Instance, old: State, new: State, reason: str) -> None:
        if new is State.RUNNING and old is State.STARTING:
            if inst.worker.runtime:
                self._arm(inst)
            if inst.worker.probes:
                self._probes[inst.id] = asyncio.create_task(self._probe_loop(inst), name=f"probe:{inst.id}")
        if new not in (State.RUNNING, State.UNHEALTHY):
            self._disarm(inst)
        if new.value in self.hooks.on and (self.hooks.command or self.hooks.webhook):
            task = asyncio.create_task(self._run_hooks(inst, new, reason))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    def _disarm(self, inst: Instance) -> None:
        timer = self._watchdogs.pop(inst.id, None)
        if timer is not None:
            timer.cancel()
        probe = self._probes.pop(inst.id, None)
        if probe is not None and probe is not asyncio.current_task():
            probe.cancel()
        for key in [k for k in self._over_since if k[0] == inst.id]:
            del self._over_since[key]

    def close(self) -> None:
        for inst in self.m.instances.values():
            self._disarm(inst)

    # ------------------------------------------------------------------ heartbeats

    @staticmethod
    def window(inst: Instance) -> float:
        return inst.worker.heartbeat_interval * inst.worker.heartbeat_misses

    def _arm(self, inst: Instance) -> None:
        """One timer per instance, re-armed at last_heartbeat + window: no per-heartbeat work."""
        last = inst.last_heartbeat or time.monotonic()
        loop = asyncio.get_running_loop()
        deadline = last + self.window(inst)
        # call_at runs on the loop's clock (time.monotonic on Linux)
        self._watchdogs[inst.id] = loop.call_at(deadline, self._check_heartbeat, inst)

    def _check_heartbeat(self, inst: Instance) -> None:
        self._watchdogs.pop(inst.id, None)
        if inst.state not in (State.RUNNING, State.UNHEALTHY) or inst.kill_request is not None:
            return
        window = self.window(inst)
        last = inst.last_heartbeat or 0.0
        age = time.monotonic() - last
        if age < window:
            self._arm(inst)
            return
        cfg = inst.worker
        reason = (
            f"heartbeat missed {cfg.heartbeat_misses}x "
            f"(none for {age:.2f}s, interval {format_duration(cfg.heartbeat_interval)})"
        )
        if inst.state is State.RUNNING:
            inst.set_state(State.UNHEALTHY, reason)
        self.m.kill_instance(inst, reason, hung=True)

    # ------------------------------------------------------------------ /health probes

    async def _probe_loop(self, inst: Instance) -> None:
        hc = inst.worker.health_check
        assert hc is not None
        while inst.state in (State.RUNNING, State.UNHEALTHY):
            await asyncio.sleep(hc.interval)
            if inst.state not in (State.RUNNING, State.UNHEALTHY) or inst.kill_request is not None:
                return
            ok, error = await self.m.probe(inst, hc.timeout)
            if ok:
                if inst.probe_failures and inst.state is State.UNHEALTHY and inst.reason.startswith("/health"):
                    inst.probe_failures = 0
                    inst.set_state(State.RUNNING, "/health answers again")
                inst.probe_failures = 0
                continue
            inst.probe_failures += 1
            reason = f"/health failing: {error} ({inst.probe_failures}/{hc.failures})"
            if inst.state is State.RUNNING:
                inst.set_state(State.UNHEALTHY, reason)
            else:
                inst.reason = reason
                self.m.notify()
            if inst.probe_failures >= hc.failures:
                self.m.kill_instance(inst, f"/health failed {hc.failures}x in a row (last: {error})", hung=False)
                return

    # ------------------------------------------------------------------ limits

    def check_limits(self) -> None:
        """Called after each psutil sample."""
        now = time.monotonic()
        for inst in self.m.instances.values():
            if inst.state not in (State.RUNNING, State.UNHEALTHY) or inst.kill_request is not None:
                continue
            lim = inst.worker.limits
            rss = inst.metrics.get("rss_mb")
            cpu = inst.metrics.get("cpu_percent")
            checks = []
            if lim.memory is not None and rss is not None:
                checks.append(("memory", rss * _MB > lim.memory, f"rss {rss:.0f} MB > {lim.memory / _MB:.0f} MB"))
            if lim.cpu is not None and cpu is not None:
                checks.append(("cpu", cpu > lim.cpu, f"cpu {cpu:.0f}% > {lim.cpu:g}%"))
            for name, over, text in checks:
                key = (inst.id, name)
                if not over:
                    self._over_since.pop(key, None)
                    continue
                since = self._over_since.setdefault(key, now)
                if now - since >= lim.window:
                    reason = f"{text} for {format_duration(lim.window)}"
                    if inst.state is State.RUNNING:
                        inst.set_state(State.UNHEALTHY, reason)
                    self.m.kill_instance(inst, reason, hung=False)
                    break

    # ------------------------------------------------------------------ notification hooks

    async def _run_hooks(self, inst: Instance, state: State, reason: str) -> None:
        event = {"state": state.value, "worker": inst.worker.name, "instance": inst.id, "reason": reason,
                 "pid": inst.pid, "time": time.time()}  # fmt: skip
        if self.hooks.command:
            await self._run_command(event)
        if self.hooks.webhook:
            await self._post(event)

    async def _run_command(self, event: dict[str, object]) -> None:
        assert self.hooks.command is not None
        env = dict(os.environ)
        env.update({f"COGO_HOOK_{k.upper()}": str(v) for k, v in event.items()})
        env["COGO_HOOK_JSON"] = json.dumps(event)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.hooks.command, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            self.m.events.emit("hook", kind_of="command", ok=False, error=exc.strerror, instance=event["instance"])
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            ok = proc.returncode == 0
            detail = out.decode(errors="replace")[-500:]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            ok, detail = False, "timed out after 10s"
        self.m.events.emit("hook", kind_of="command", ok=ok, exit_code=proc.returncode, output=detail,
                           instance=event["instance"], state=event["state"])  # fmt: skip

    async def _post(self, event: dict[str, object]) -> None:
        assert self.hooks.webhook is not None
        url = urllib.parse.urlsplit(self.hooks.webhook)
        host = (url.hostname or "127.0.0.1").strip("[]")
        port = url.port or 80
        body = json.dumps(event).encode()
        try:
            status, _, _ = await http_request("POST", host, port, url.path or "/", 5.0,
                                              [("Content-Type", "application/json")], body)  # fmt: skip
            ok, detail = 200 <= status < 300, f"HTTP {status}"
        except ProbeError as exc:
            ok, detail = False, str(exc)
        self.m.events.emit("hook", kind_of="webhook", ok=ok, detail=detail, instance=event["instance"],
                           state=event["state"])  # fmt: skip
