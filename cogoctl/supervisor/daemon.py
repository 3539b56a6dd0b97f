"""The supervisor process: lock, sockets, signals, start-up report, shutdown.

Run by `cogoctl up` as ``python -m cogoctl.supervisor.daemon --profile P --state-dir D``.
One supervisor per state dir: an flock on cogoctl.lock, held for the whole life of the process,
decides that (not the pid file, which is informational). The socket is bound only after the
lock is taken (asyncio's unix server silently unlinks an existing path).
"""

from __future__ import annotations

import sys

if "asyncio" not in sys.modules:
    # The supervisor uses no OpenSSL: no TLS, and only SHA-1 of a path and constant-time compares,
    # which Python's built-in digests and _operator provide. Yet asyncio imports ssl (for optional
    # TLS) and hmac/hashlib/secrets import _hashlib, and mapping libssl + libcrypto is ~8 MB of
    # the daemon's RSS (measured: 33 -> 25 MB idle). Each of these modules treats a failed import
    # as "not available". The entries are removed again at once, so a later import (prometheus_
    # client imports ssl on the first /metrics scrape) works as usual.
    for _name in ("ssl", "_hashlib"):
        sys.modules[_name] = None  # type: ignore[assignment]
    try:
        import asyncio
        import hashlib  # noqa: F401  (bound here to the built-in digests)
        import hmac  # noqa: F401  (compare_digest from _operator)
        import secrets
    finally:
        for _name in ("ssl", "_hashlib"):
            del sys.modules[_name]

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

from cogoctl import __version__, paths
from cogoctl.errors import CogoError
from cogoctl.profile import Profile, load_profile
from cogoctl.supervisor import cgroup
from cogoctl.supervisor.dispatch import BalancerCollector, Dispatcher
from cogoctl.supervisor.health import HealthMonitor
from cogoctl.supervisor.http import HTTPServer
from cogoctl.supervisor.instance import Instance
from cogoctl.supervisor.link import LinkServer
from cogoctl.supervisor.manager import Manager, describe_exit
from cogoctl.supervisor.reloader import Reloader
from cogoctl.supervisor.scaling import Scaler
from cogoctl.supervisor.states import State
from cogoctl.supervisor.watch import Watcher

log = logging.getLogger("cogoctl.supervisor")


class LockHeld(CogoError):
    pass


def read_or_create_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def take_lock(state_dir: Path) -> int:
    fd = os.open(state_dir / paths.LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = "?"
        with contextlib.suppress(OSError):
            pid = (state_dir / paths.PID_NAME).read_text().strip()
        raise LockHeld(
            f"a supervisor (pid {pid}) is already running for state dir {state_dir}; "
            "use `cogoctl status`, or `cogoctl down` first"
        ) from None
    return fd


class Daemon:
    def __init__(
        self, profile: Profile, state_dir: Path, ready_fd: int | None, fail_fast: bool, watch: bool | None = None
    ) -> None:
        self.profile = profile
        self.watch = profile.manager.watch if watch is None else watch
        self.state_dir = state_dir
        self.ready_fd = ready_fd
        self.fail_fast = fail_fast
        self.pid = os.getpid()
        self.socket_path = paths.socket_path(state_dir, profile.manager.socket)
        self.started = time.time()
        self._shutdown = asyncio.Event()
        self.shutdown_reason = ""
        self.exit_code = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._http: list[HTTPServer] = []
        self._first_starting: dict[str, float] = {}
        self.api_token: str | None = None
        self.manager: Manager  # set in run()

    # ------------------------------------------------------------------ life

    async def run(self) -> int:
        lock_fd = take_lock(self.state_dir)
        try:
            return await self._run_locked()
        finally:
            with contextlib.suppress(OSError):
                (self.state_dir / paths.PID_NAME).unlink()
            os.close(lock_fd)

    async def _run_locked(self) -> int:
        sd = self.state_dir
        killed = cgroup.cleanup_stale(cgroup.supervisor_key(str(sd))) if cgroup.available() else []
        (sd / paths.PID_NAME).write_text(f"{self.pid}\n")
        (sd / "socket.path").write_text(f"{self.socket_path}\n")  # how the CLI finds manager.socket
        worker_token = read_or_create_token(sd / paths.WORKER_TOKEN_NAME)
        self.manager = Manager(self.profile, sd, self.socket_path, worker_token)
        m = self.manager
        m.listeners.append(self._on_state)
        m.events.emit("supervisor", action="started", pid=self.pid, profile=self.profile.path, version=__version__)
        if killed:
            m.events.emit("cleanup", reason="left by a previous supervisor on this state dir", killed=killed)
        for cfg in self.profile.enabled_workers:
            m.add_worker(cfg)
        self.links = LinkServer(m)
        self.monitor = HealthMonitor(m, self.profile.manager.hooks)
        m.after_sample.append(self.monitor.check_limits)
        self.dispatcher = Dispatcher(m, self.links)
        self.metric_collectors: list[Any] = [BalancerCollector(self.dispatcher)]
        self.scaler = Scaler(m, self.dispatcher)
        self.autoscaler = asyncio.create_task(self.scaler.autoscale_forever())
        self.reloader = Reloader(self)
        self.watcher = Watcher(lambda: list(m.workers.values()), [str(sd)], self.profile.manager.watch_debounce,
                               self._restart_for_changes)  # fmt: skip
        self.watcher.on_failure = lambda why: m.events.emit("watch", failed=why)
        await self._listen()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown, f"received {signal.Signals(sig).name}")
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_sighup)
        m.start_all()
        if self.watch:
            self.watcher.start()
        sampler = asyncio.create_task(m.sample_forever())
        reporter = asyncio.create_task(self._report_start()) if self.ready_fd is not None else None
        await self._shutdown.wait()
        log.info("shutting down: %s", self.shutdown_reason)
        m.events.emit("supervisor", action="stopping", reason=self.shutdown_reason)
        if reporter is not None:
            reporter.cancel()
        self.autoscaler.cancel()
        self.watcher.stop()
        self.dispatcher.fail_all(f"the supervisor is stopping ({self.shutdown_reason})")
        self.monitor.close()
        await m.stop_all()
        if m.use_cgroups:
            cgroup.remove_supervisor(m.cgroup_key)
        sampler.cancel()
        for server in self._servers:
            server.close()
        for http in self._http:
            await http.close_all()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        m.events.close()
        return self.exit_code

    def _reload_on_sighup(self) -> None:
        """SIGHUP: `cogoctl reload` with the supervisor's own environment."""

        async def run() -> None:
            try:
                result = await self.reloader.reload(None, dry_run=False)
                log.info("reload on SIGHUP: %s", result["outcome"])
            except CogoError as exc:
                self.manager.events.emit("reload", refused=str(exc))
            except Exception:
                log.exception("reload on SIGHUP failed")

        self._reload_task = asyncio.ensure_future(run())

    def watcher_changed(self) -> None:
        """The set of watched paths may have changed (reload)."""
        if self.watch:
            self.watcher.start()

    async def _restart_for_changes(self, worker: str, files: list[str]) -> None:
        insts = list(self.manager.by_worker.get(worker, []))
        if not insts:
            return
        names = ", ".join(os.path.basename(f) for f in files[:3]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else ""
        )
        self.manager.events.emit("watch", worker=worker, files=files[:50], count=len(files))
        await self.rolling_restart(insts, f"files changed: {names}")

    def request_shutdown(self, reason: str) -> None:
        if not self._shutdown.is_set():
            self.shutdown_reason = reason
            self._shutdown.set()

    async def _listen(self) -> None:
        http = HTTPServer(self._handler())
        self._http.append(http)
        path = self.socket_path
        if len(path.encode()) > paths.MAX_UNIX_PATH:
            raise CogoError(
                f"socket path {path} is longer than {paths.MAX_UNIX_PATH} bytes; set COGO_STATE_DIR shorter"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: we hold the lock, so no live supervisor owns it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)  # created 0600 (umask 177), never chmod'ed after the fact
        finally:
            os.umask(old)
        sock.listen(512)
        self._servers.append(await asyncio.start_unix_server(http.serve_connection, sock=sock, limit=2**20))
        api = self.profile.manager.api
        if api.enabled:
            self.api_token = read_or_create_token(self.state_dir / paths.API_TOKEN_NAME)
            tcp = HTTPServer(self._handler(), token=self.api_token)
            self._http.append(tcp)
            try:
                self._servers.append(await asyncio.start_server(tcp.serve_connection, api.host, api.port))
            except OSError as exc:
                raise CogoError(
                    f"manager.api: cannot listen on {api.host}:{api.port}: {exc.strerror}; "
                    "free the port or change manager.api.port"
                ) from None

    def _handler(self) -> Any:
        from cogoctl.supervisor.api import Api

        return Api(self)

    # ------------------------------------------------------------------ start-up report

    def _on_state(self, inst: Instance, old: State, new: State, reason: str) -> None:
        if new is State.STARTING:
            self._first_starting.setdefault(inst.id, time.monotonic())

    def _startup_failure(self) -> Instance | None:
        now = time.monotonic()
        for inst in self.manager.instances.values():
            if inst.state in (State.FATAL, State.EXITED):
                return inst
            first = self._first_starting.get(inst.id)
            if first is not None and inst.state is not State.RUNNING and now - first > inst.worker.start_timeout:
                return inst
        return None

    async def _report_start(self) -> None:
        m = self.manager

        def settled() -> bool:
            return self._startup_failure() is not None or all(i.state is State.RUNNING for i in m.instances.values())

        while not await m.wait_for(settled, 0.25):
            pass
        failed = self._startup_failure()
        if failed is None:
            self._write_ready({"ok": True, "pid": self.pid, "socket": self.socket_path, "workers": m.status()})
            return
        report = {
            "ok": False,
            "worker": failed.worker.name,
            "instance": failed.id,
            "state": failed.state.value,
            "exit_code": failed.exit_code,
            "exit": describe_exit(failed.exit_code) if failed.exit_code is not None else None,
            "reason": failed.reason,
            "log_tail": failed.log.tail(10),
        }
        self._write_ready(report)
        if self.fail_fast:
            self.exit_code = 1
            self.request_shutdown(f"{failed.id} could not start: {failed.reason}")

    def _write_ready(self, report: dict[str, Any]) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, (json.dumps(report) + "\n").encode())
            os.close(self.ready_fd)
        self.ready_fd = None

    # ------------------------------------------------------------------ views and operations

    def describe(self) -> dict[str, Any]:
        api = self.profile.manager.api
        return {
            "pid": self.pid,
            "version": __version__,
            "profile": self.profile.path,
            "state_dir": str(self.state_dir),
            "socket": self.socket_path,
            "uptime_s": round(time.time() - self.started, 3),
            "cgroups": self.manager.use_cgroups,
            "api": f"http://{api.host}:{api.port}" if api.enabled else None,
            "watch": self.watch,
        }

    def monitor_view(self, inst: Instance) -> dict[str, Any]:
        cfg = inst.worker
        hc = cfg.health_check
        hb_age = None if inst.last_heartbeat is None else round(time.monotonic() - inst.last_heartbeat, 3)
        return {
            "heartbeats": {
                "interval_s": cfg.heartbeat_interval,
                "misses_allowed": cfg.heartbeat_misses,
                "window_s": HealthMonitor.window(inst),
                "last_age_s": hb_age,
                "seq": inst.heartbeat_seq,
                "linked": inst.link is not None,
            }
            if cfg.runtime
            else None,
            "probe": {
                "path": hc.path,
                "interval_s": hc.interval,
                "timeout_s": hc.timeout,
                "failures_allowed": hc.failures,
                "failures": inst.probe_failures,
                "last_ms": inst.last_probe_ms,
            }
            if cfg.probes and hc is not None
            else None,
            "limits": {
                "memory_mb": None if cfg.limits.memory is None else cfg.limits.memory / 1048576,
                "cpu_percent": cfg.limits.cpu,
                "window_s": cfg.limits.window,
            },
            "metrics": inst.metrics,
            "load": inst.load,
        }

    async def rolling_restart(self, insts: list[Instance], reason: str = "restart requested") -> bool:
        """One instance at a time: drain it (no new tasks, in-flight ones finish), restart it, and
        wait until it is RUNNING again before the next. With several instances, tasks keep flowing."""
        m = self.manager
        ok = True
        for inst in insts:
            old_pid = inst.pid if inst.alive else None
            if inst.task is None or inst.task.done():
                m.start_instance(inst, reason)
            else:
                if inst.state is State.RUNNING and len(m.by_worker[inst.worker.name]) > 1:
                    await self.dispatcher.drain(inst, inst.worker.stop_timeout)
                m.restart_instance(inst, reason)

            def settled(inst: Instance = inst, old_pid: int | None = old_pid) -> bool:
                if (
                    inst.state in (State.FATAL, State.EXITED, State.STOPPED)
                    and inst.task is not None
                    and inst.task.done()
                ):
                    return True
                return inst.state is State.RUNNING and inst.pid != old_pid

            timeout = inst.worker.stop_timeout + inst.worker.start_timeout + 5
            if not await m.wait_for(settled, timeout) or inst.state is not State.RUNNING:
                ok = False
        return ok


def _setup_logging(state_dir: Path, profile: Profile) -> None:
    handler = logging.handlers.RotatingFileHandler(
        state_dir / paths.SUPERVISOR_LOG,
        maxBytes=profile.manager.logs.max_size,
        backupCount=profile.manager.logs.backups,
        encoding="utf-8",
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cogoctl-supervisor")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--fail-fast", action="store_true")
    parser.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    ready_fd = args.ready_fd

    def fail(message: str, code: int) -> int:
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (json.dumps({"ok": False, "error": message, "code": code}) + "\n").encode())
        print(f"cogoctl supervisor: {message}", file=sys.stderr)
        return code

    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        profile = load_profile(args.profile)
        _setup_logging(state_dir, profile)
        daemon = Daemon(profile, state_dir, ready_fd, args.fail_fast, args.watch)
        return asyncio.run(daemon.run())
    except CogoError as exc:
        return fail(str(exc), int(exc.exit_code))
    except OSError as exc:
        return fail(f"{exc.filename or state_dir}: {exc.strerror}", 1)


if __name__ == "__main__":
    sys.exit(main())
