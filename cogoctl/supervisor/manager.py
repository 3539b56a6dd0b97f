"""The WorkerManager: instances' lifecycles, start order, stop, restart, and waiting for states.

Each instance has one asyncio task (`_supervise`) that owns its process: spawn, wait for
readiness, wait for exit or a request, stop, and decide what comes next. Everything else
(API, health monitor, balancer) asks that task for changes through `Instance.request`,
`restart_instance` or `kill_instance`; it never touches the process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cogoctl.aio import wait_event
from cogoctl.httpclient import ProbeError, http_get
from cogoctl.profile import Profile, WorkerConfig, mask_env
from cogoctl.supervisor import cgroup
from cogoctl.supervisor.events import EventLog
from cogoctl.supervisor.instance import Instance, Want
from cogoctl.supervisor.logs import RotatingLog, mask_secrets, secret_values, utc_stamp
from cogoctl.supervisor.metrics import ProcessSampler
from cogoctl.supervisor.process import ManagedProcess
from cogoctl.supervisor.states import State, should_restart
from cogoctl.units import format_duration

log = logging.getLogger("cogoctl.supervisor")
READY_POLL = 0.01  # readiness is polled fast until start_timeout, not at the probe interval


class NotFound(KeyError):
    pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exit code {code}"


class Manager:
    def __init__(self, profile: Profile, state_dir: Path, socket_path: str, worker_token: str) -> None:
        self.profile = profile
        self.state_dir = state_dir
        self.socket_path = socket_path
        self.worker_token = worker_token
        self.logs_dir = state_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        mlogs = profile.manager.logs
        self.events = EventLog(state_dir / "events.jsonl", mlogs.max_size, mlogs.backups)
        self.cgroup_key = cgroup.supervisor_key(str(state_dir))
        self.use_cgroups = cgroup.available()
        self.instances: dict[str, Instance] = {}
        self.by_worker: dict[str, list[Instance]] = {}
        self.workers: dict[str, WorkerConfig] = {}
        self._changed = asyncio.Event()
        self._sampler = ProcessSampler()
        self._secrets: dict[str, list[str]] = {}
        self.listeners: list[Callable[[Instance, State, State, str], None]] = []
        self.after_sample: list[Callable[[], None]] = []
        self.started_at = time.time()
        self.shutting_down = False
        self._worker_starters: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ registry

    def add_worker(self, cfg: WorkerConfig) -> None:
        self.workers[cfg.name] = cfg
        self._secrets[cfg.name] = secret_values(cfg.env)
        self.by_worker[cfg.name] = []
        for i in range(cfg.instances):
            self._add_instance(cfg, i)

    def _add_instance(self, cfg: WorkerConfig, index: int) -> Instance:
        logfile = RotatingLog(self.logs_dir / f"{cfg.name}-{index}.log", cfg.logs.max_size, cfg.logs.backups)
        inst = Instance(cfg, index, logfile, self._state_changed)
        self.instances[inst.id] = inst
        self.by_worker[cfg.name].append(inst)
        return inst

    def add_instance(self, cfg: WorkerConfig) -> Instance:
        """One more instance, with the lowest index not in use."""
        used = {i.index for i in self.by_worker[cfg.name]}
        index = next(n for n in range(len(used) + 1) if n not in used)
        inst = self._add_instance(cfg, index)
        self.by_worker[cfg.name].sort(key=lambda i: i.index)
        return inst

    def remove_worker(self, name: str) -> None:
        """Forget a worker whose instances are all removed (reload)."""
        assert not self.by_worker.get(name)
        self.workers.pop(name, None)
        self.by_worker.pop(name, None)
        self._secrets.pop(name, None)
        self.notify()

    def update_worker(self, cfg: WorkerConfig) -> None:
        """New settings for a worker: its instances use them from their next start (and at once
        for what is read live: limits, timeouts, restart policy, heartbeat window)."""
        self.workers[cfg.name] = cfg
        self._secrets[cfg.name] = secret_values(cfg.env)
        for inst in self.by_worker[cfg.name]:
            inst.worker = cfg
            inst.tracker.config = cfg.restart
            if not inst.alive:
                inst.capabilities = cfg.capabilities
        self.notify()

    def remove_instance(self, inst: Instance) -> None:
        """Forget a stopped instance (scale down). Its log file stays on disk."""
        assert not inst.alive
        self.instances.pop(inst.id, None)
        self.by_worker[inst.worker.name].remove(inst)
        inst.log.close()
        self.notify()

    def resolve(self, target: str) -> list[Instance]:
        """A worker name (all its instances), an instance id, or `all`."""
        if target == "all":
            return [i for name in self.workers for i in self.by_worker[name]]
        if target in self.by_worker:
            return list(self.by_worker[target])
        if target in self.instances:
            return [self.instances[target]]
        known = ", ".join([*list(self.workers), "all"]) or "none"
        raise NotFound(f"no worker or instance named {target!r} (workers: {known})")

    def _state_changed(self, inst: Instance, old: State, new: State, reason: str) -> None:
        self.events.emit(
            "state",
            worker=inst.worker.name,
            instance=inst.id,
            old=old.value,
            new=new.value,
            reason=mask_secrets(reason, self._secrets.get(inst.worker.name, [])),
            pid=inst.pid,
        )
        log.info("%s: %s -> %s (%s)", inst.id, old.value, new.value, reason)
        for listener in self.listeners:
            try:
                listener(inst, old, new, reason)
            except Exception:  # a listener must never break the state machine
                log.exception("state listener failed")
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            ev = self._changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if not await wait_event(ev, remaining):
                return predicate()
        return True

    # ------------------------------------------------------------------ start / stop

    def start_all(self) -> None:
        """Start every enabled worker; each waits for its dependencies to be RUNNING."""
        for name in self.workers:
            self.start_worker(name, reason="supervisor start")

    def start_worker(self, name: str, reason: str) -> None:
        starter = self._worker_starters.get(name)
        if starter is not None and not starter.done():
            return
        self._worker_starters[name] = asyncio.create_task(self._start_after_deps(name, reason))

    async def _start_after_deps(self, name: str, reason: str) -> None:
        cfg = self.workers[name]
        deps = [d for d in cfg.depends_on if d in self.workers]
        if deps:
            for inst in self.by_worker[name]:
                inst.reason = f"waiting for {', '.join(deps)}"
            self.notify()

            def deps_ready() -> bool:
                return all(i.state is State.RUNNING for d in deps for i in self.by_worker[d])

            await self.wait_for(deps_ready, None)
        for inst in self.by_worker[name]:
            self.start_instance(inst, reason)

    def start_instance(self, inst: Instance, reason: str) -> None:
        if self.shutting_down:
            return
        if inst.state is State.FATAL:
            inst.tracker.reset()
        inst.request(Want.RUN)
        if inst.task is None or inst.task.done():
            inst.task = asyncio.create_task(self._supervise(inst, reason), name=f"supervise:{inst.id}")

    def stop_instance(self, inst: Instance) -> None:
        inst.request(Want.STOP)

    def restart_instance(self, inst: Instance, reason: str) -> None:
        """A requested, clean restart (does not count as a failure)."""
        if inst.task is None or inst.task.done():
            self.start_instance(inst, reason)
            return
        inst.restart_request = reason
        inst.request(Want.RUN)

    def kill_instance(self, inst: Instance, reason: str, hung: bool) -> None:
        """The health monitor's restart: counts as a failure; hung ones get the short kill timeout."""
        if inst.alive and inst.kill_request is None:
            inst.kill_request = (reason, hung)
            inst.wake.set()

    async def stop_all(self) -> None:
        """Stop every worker in reverse start order (instances of one worker together)."""
        self.shutting_down = True
        for starter in self._worker_starters.values():
            starter.cancel()
        for name in reversed(list(self.workers)):
            insts = self.by_worker[name]
            for inst in insts:
                self.stop_instance(inst)
            tasks = [i.task for i in insts if i.task is not None and not i.task.done()]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        self.events.emit("supervisor", action="stopped")

    # ------------------------------------------------------------------ the lifecycle

    async def _supervise(self, inst: Instance, reason: str) -> None:
        try:
            await self._lifecycle(inst, reason)
            # the cgroup is kept across restarts (creating one costs kernel time on the restart
            # path) and removed once the instance is down for good
            if inst.proc is not None and inst.proc.cgroup is not None:
                inst.proc.cgroup.remove()
        except asyncio.CancelledError:
            if inst.proc is not None and inst.proc.alive:
                inst.proc.kill_everything()
            raise
        except Exception as exc:  # never leave an instance unmanaged on a bug: say so and kill
            log.exception("%s: supervision failed", inst.id)
            if inst.proc is not None and inst.proc.alive:
                inst.proc.kill_everything()
                await inst.proc.exited.wait()
            self._cleanup_process(inst)
            with contextlib.suppress(Exception):
                if inst.state in (State.STARTING, State.RUNNING, State.UNHEALTHY):
                    inst.set_state(State.STOPPING, "internal error")
                inst.set_state(State.FATAL, f"internal supervisor error: {exc}")

    async def _lifecycle(self, inst: Instance, reason: str) -> None:
        cfg = inst.worker
        count_start = True
        while inst.want is Want.RUN and not self.shutting_down:
            cfg = inst.worker
            if count_start:  # requested restarts do not count toward the start limit
                inst.tracker.record_start(time.monotonic())
            count_start = True
            inst.wake.clear()
            inst.restart_request = None
            inst.kill_request = None
            inst.set_state(State.STARTING, reason)
            try:
                self._spawn(inst)
            except OSError as exc:
                inst.exit_code = None
                reason = f"cannot start {cfg.command[0]!r}: {exc.strerror or exc}"
                if not await self._after_failure(inst, reason, ran_for=0.0, exit_code=127):
                    return
                continue
            assert inst.proc is not None
            proc = inst.proc
            ready, why = await self._await_ready(inst)
            if ready:
                inst.set_state(State.RUNNING, why)
            elif proc.alive and inst.want is Want.RUN and inst.restart_request is None and not self.shutting_down:
                # not ready within start_timeout: kill and count as a failed start
                await self._terminate(inst, why, cfg.stop_timeout)
            if inst.state in (State.RUNNING, State.UNHEALTHY):
                await self._wait_exit_or_request(inst)
            # here: exited, or a request/health kill is pending on a live process
            if proc.alive:
                if inst.kill_request is not None:
                    why, hung = inst.kill_request
                    await self._terminate(inst, why, cfg.hang_kill_timeout if hung else cfg.stop_timeout, hung=hung)
                else:
                    why = (
                        "stop requested"
                        if inst.want is Want.STOP or self.shutting_down
                        else (inst.restart_request or "restart requested")
                    )
                    await self._terminate(inst, why, cfg.stop_timeout)
            ran_for = time.monotonic() - (inst.started_at or time.monotonic())
            code = proc.returncode
            self._cleanup_process(inst)
            if inst.want is Want.STOP or self.shutting_down:
                if inst.state is not State.STOPPING:
                    inst.set_state(State.STOPPING, f"stop requested; {describe_exit(code)}")
                inst.set_state(State.STOPPED, f"stopped ({describe_exit(code)})")
                return
            if inst.restart_request is not None and inst.kill_request is None:
                reason = inst.restart_request
                if inst.state is not State.STOPPING:
                    inst.set_state(State.STOPPING, reason)
                inst.set_state(State.STOPPED, f"{reason}; {describe_exit(code)}")
                inst.restarts += 1
                count_start = False
                continue
            why = inst.kill_request[0] if inst.kill_request else (inst.reason if inst.state is State.STOPPING else "")
            exit_reason = f"{why}; {describe_exit(code)}" if why else describe_exit(code)
            if not await self._after_failure(inst, exit_reason, ran_for, code):
                return
            reason = f"restart after {exit_reason}"

    async def _after_failure(self, inst: Instance, reason: str, ran_for: float, exit_code: int | None) -> bool:
        """An unrequested exit or failed start. Returns whether to start again."""
        cfg = inst.worker
        requested = inst.kill_request is not None  # the monitor killed it: always restart
        if not should_restart(cfg.restart.policy, exit_code, requested):
            inst.set_state(State.EXITED, f"{reason}; restart policy {cfg.restart.policy}")
            return False
        inst.tracker.record_exit(ran_for)
        now = time.monotonic()
        if inst.tracker.limit_reached(now):
            rc = cfg.restart
            inst.set_state(
                State.FATAL,
                f"{reason}; start limit reached ({rc.start_limit} starts within {format_duration(rc.start_window)}); "
                f"`cogoctl start {cfg.name}` to retry",
            )
            return False
        delay = inst.tracker.next_delay()
        inst.set_state(State.BACKOFF, f"{reason}; restarting in {format_duration(delay)}")
        inst.restarts += 1
        if delay > 0:
            inst.wake.clear()
            await wait_event(inst.wake, delay)
        if inst.want is Want.STOP or self.shutting_down:
            inst.set_state(State.STOPPED, "stop requested during backoff")
            return False
        return True

    def _spawn(self, inst: Instance) -> None:
        cfg = inst.worker
        inst.registered.clear()
        inst.link_token = secrets.token_hex(16)
        inst.last_heartbeat = None
        inst.probe_failures = 0
        inst.load = {"active": 0, "queued": 0}
        inst.draining = False
        if inst.index == 0 and cfg.port:
            inst.port = cfg.port
        elif not cfg.runtime and cfg.port is not None:
            inst.port = _free_port()  # plain commands get their port through env
        else:
            inst.port = None  # runtime workers bind 0 and report it in hello
        env = {k: v for k, v in os.environ.items() if not k.startswith("COGO_")}
        env.update(cfg.env)
        env.update(
            {
                "COGO_WORKER": cfg.name,
                "COGO_INSTANCE": inst.id,
                "COGO_INSTANCE_INDEX": str(inst.index),
                "COGO_SOCKET": self.socket_path,
                "COGO_STATE_DIR": str(self.state_dir),
                "COGO_LINK_TOKEN": inst.link_token,
                "COGO_WORKER_TOKEN": self.worker_token,
                "COGO_HEARTBEAT_INTERVAL": repr(cfg.heartbeat_interval),
                "COGO_MAX_CONCURRENCY": str(cfg.max_concurrency),
                "COGO_PUBLIC": cfg.public,
                "COGO_HEALTH_PATH": cfg.health_check.path if cfg.health_check else "/health",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if cfg.capabilities:
            env["COGO_CAPABILITIES"] = ",".join(cfg.capabilities)
        if cfg.options:
            import json

            env["COGO_OPTIONS"] = json.dumps(cfg.options)
        if inst.port is not None:
            env["COGO_PORT"] = str(inst.port)
            env["PORT"] = str(inst.port)
        elif cfg.runtime and cfg.port is not None:
            env["COGO_PORT"] = "0"
        cg = cgroup.InstanceCgroup(self.cgroup_key, inst.id) if self.use_cgroups else None
        secrets_ = self._secrets.get(cfg.name, [])

        def on_output(stream: str, line: bytes) -> None:
            text = line.decode("utf-8", "replace").rstrip("\r")
            inst.log.write(f"{utc_stamp()} {stream} {mask_secrets(text, secrets_)}")

        def on_exit(code: int) -> None:
            inst.exit_code = code
            self.notify()

        inst.proc = ManagedProcess(cfg.command, env, cfg.cwd, on_output, on_exit, cg)
        inst.pid = inst.proc.pid
        inst.started_at = time.monotonic()
        inst.started_wall = time.time()
        inst.exit_code = None
        inst.metrics = {}
        self.events.emit(
            "spawn", worker=cfg.name, instance=inst.id, pid=inst.pid, command=list(cfg.command),
            env=mask_env(cfg.env), cgroup=cg is not None,
        )  # fmt: skip

    async def _await_ready(self, inst: Instance) -> tuple[bool, str]:
        """Registered (runtime workers) and /health answering (when probed), within start_timeout."""
        cfg = inst.worker
        proc = inst.proc
        assert proc is not None
        deadline = time.monotonic() + cfg.start_timeout
        needs: list[str] = []
        if cfg.runtime:
            needs.append("registered")
        if cfg.probes:
            needs.append("/health answered")
        if not needs:
            # no readiness signal: it must stay up min_uptime (supervisord's startsecs) to count
            if cfg.min_uptime > 0:
                await wait_event(proc.exited, cfg.min_uptime)
                if not proc.alive:
                    return False, f"exited within min_uptime {format_duration(cfg.min_uptime)}"
            return True, f"up for {format_duration(cfg.min_uptime)} (plain command, no readiness check)"
        last_probe_error = ""
        while True:
            if not proc.alive:
                return False, f"exited during start ({describe_exit(proc.returncode)})"
            if inst.want is Want.STOP or inst.restart_request is not None or self.shutting_down:
                return False, "stop requested during start"
            if inst.kill_request is not None:
                return False, inst.kill_request[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = "registration" if cfg.runtime and not inst.registered.is_set() else "/health"
                extra = f" (last probe: {last_probe_error})" if last_probe_error else ""
                return (
                    False,
                    f"not ready within start_timeout {format_duration(cfg.start_timeout)}: no {missing}{extra}",
                )
            if cfg.runtime and not inst.registered.is_set():
                waiter = asyncio.create_task(inst.registered.wait())
                exit_waiter = asyncio.create_task(proc.exited.wait())
                wake = asyncio.create_task(inst.wake.wait())
                await asyncio.wait({waiter, exit_waiter, wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                for t in (waiter, exit_waiter, wake):
                    t.cancel()
                inst.wake.clear()
                continue
            if cfg.probes and inst.port is not None:
                ok, last_probe_error = await self.probe(inst, min(cfg.health_check.timeout, max(remaining, 0.05)))  # type: ignore[union-attr]
                if ok:
                    return True, " and ".join(needs)
                await wait_event(proc.exited, READY_POLL)
                continue
            return True, " and ".join(needs)

    async def probe(self, inst: Instance, timeout: float) -> tuple[bool, str]:
        cfg = inst.worker
        assert cfg.health_check is not None and inst.port is not None
        headers = [("Authorization", f"Bearer {self.worker_token}")]
        try:
            status, body, ms = await http_get("127.0.0.1", inst.port, cfg.health_check.path, timeout, headers)
        except ProbeError as exc:
            return False, str(exc)
        inst.last_probe_ms = round(ms, 2)
        try:
            import json

            inst.health_answer = json.loads(body) if body else None
        except ValueError:
            inst.health_answer = body[:200].decode("utf-8", "replace")
        if 200 <= status < 300:
            return True, ""
        return False, f"HTTP {status}"

    async def _wait_exit_or_request(self, inst: Instance) -> None:
        proc = inst.proc
        assert proc is not None
        while proc.alive:
            if inst.want is Want.STOP or self.shutting_down or inst.restart_request or inst.kill_request:
                return
            inst.wake.clear()
            exit_waiter = asyncio.create_task(proc.exited.wait())
            wake = asyncio.create_task(inst.wake.wait())
            await asyncio.wait({exit_waiter, wake}, return_when=asyncio.FIRST_COMPLETED)
            exit_waiter.cancel()
            wake.cancel()

    async def _terminate(self, inst: Instance, reason: str, timeout: float, hung: bool = False) -> None:
        """STOPPING: stop signal to the group (SIGKILL at once for a hung one after `timeout`)."""
        proc = inst.proc
        assert proc is not None
        if inst.state is not State.STOPPING:
            inst.set_state(State.STOPPING, reason)
        # a stopped process must run to see its stop signal; a hung one gets hang_kill_timeout
        # (passed in as `timeout`) instead of stop_timeout, since its loop cannot act on it
        proc.signal(inst.worker.signum)
        proc.signal(signal.SIGCONT)
        if not await wait_event(proc.exited, timeout):
            self.events.emit(
                "kill", worker=inst.worker.name, instance=inst.id, pid=inst.pid,
                reason=f"did not exit within {format_duration(timeout)} of {inst.worker.stop_signal}" + (" (hung)" if hung else ""),
            )  # fmt: skip
            proc.kill_everything()
            await proc.exited.wait()

    def _cleanup_process(self, inst: Instance) -> None:
        """After the main process exited: kill whatever of its group/cgroup is left, reap pipes."""
        proc = inst.proc
        if proc is None:
            return
        leftovers = proc.leftovers()
        proc.kill_everything()
        if leftovers:
            self.events.emit("cleanup", worker=inst.worker.name, instance=inst.id, killed=leftovers)
        proc.drain_output()
        proc.close_pipes()
        if inst.link is not None:
            with contextlib.suppress(Exception):
                inst.link.close_from_supervisor()
        inst.registered.clear()
        self.notify()

    # ------------------------------------------------------------------ metrics

    async def sample_forever(self) -> None:
        interval = self.profile.manager.metrics_interval
        while True:
            self.sample_once()
            await asyncio.sleep(interval)

    def sample_once(self) -> None:
        live: set[int] = set()
        for inst in self.instances.values():
            proc = inst.proc
            if proc is None or not proc.alive:
                continue
            extra = proc.cgroup.pids() if proc.cgroup is not None else []
            inst.metrics = self._sampler.sample(proc.pid, extra)
            live.add(proc.pid)
            live.update(extra)
        self._sampler.forget_except(live)
        for cb in self.after_sample:
            cb()

    # ------------------------------------------------------------------ views

    def status(self, target: str | None = None) -> list[dict[str, Any]]:
        insts: Iterable[Instance] = self.resolve(target) if target else self.resolve("all")
        return [i.snapshot() for i in insts]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
