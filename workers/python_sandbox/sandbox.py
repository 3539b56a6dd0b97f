"""Contained child interpreters: spawning, the warm pool, one-shot runs and sessions.

Each interpreter is started (fork + exec, clean) with: its own session (process group), its own
network namespace (no network: only a down loopback), rlimits (address space, cpu, file size, open
files, processes), a scrubbed environment, and — when the worker runs as root — a uid of its own
(so RLIMIT_NPROC counts that run only, and the worker's files, environment, state dir and
/etc/shadow are out of reach). What the host cannot enforce is reported, loudly, at start and in
/health, never pretended.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from workers.python_sandbox.bootstrap import BOOTSTRAP
from workers.python_sandbox.policy import Limits
from workers.python_sandbox.zygote import ZYGOTE

log = logging.getLogger("python-sandbox")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
SETPRIV = shutil.which("setpriv")
SWEEP = 0.5  # seconds between sweeps of used uids
DRAIN = 0.2  # seconds the pipes may still deliver after a run's status line
BASELINE_AS = 96 * 1024 * 1024  # the interpreter's own address space, above which memory_mb counts

Emit = Callable[[str, str], Awaitable[None]]


def find_interpreter() -> str | None:
    """A Python the sandbox uid can read: the pyenv one lives under /root (0700)."""
    for cand in ("/usr/bin/python3.11", "/usr/bin/python3", sys.executable):
        if not os.path.exists(cand):
            continue
        real = os.path.realpath(cand)
        if os.geteuid() != 0 or _world_readable(real):
            return cand
    return None


def _world_readable(path: str) -> bool:
    p = Path(path)
    for part in [p, *p.parents]:
        mode = part.stat().st_mode
        if part.is_dir() and not mode & 0o001:
            return False
    return bool(p.stat().st_mode & 0o005)


@dataclass
class Runner:
    """One sandboxed interpreter: its pid, pipes, and the future of its exit code (negative:
    killed by that signal), whether the zygote forked it or Popen exec'd it."""

    pid: int
    stdin: BinaryIO
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    status: asyncio.StreamReader
    uid: int | None
    exited: asyncio.Future[int]
    started: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    async def send(self, request: dict[str, Any], close: bool) -> None:
        """Write one request line (in a thread: a large program must not block the loop)."""
        data = (json.dumps(request) + "\n").encode()

        def write() -> None:
            self.stdin.write(data)
            if close:
                self.stdin.close()

        await asyncio.to_thread(write)


@dataclass
class RunOutcome:
    exit_code: int | None
    signal: int | None
    killed: str | None
    peak_rss_mb: float | None
    stdout_truncated: bool
    duration_ms: float


class Host:
    def __init__(self, limits: Limits, root: Path, slot: int = 0) -> None:
        """slot: the instance's index; each instance has a uid range of its own (a uid's leftovers
        are swept by killing every process of that uid, which must never hit another instance's run)."""
        self.limits = limits
        self.root = root
        self.interpreter = find_interpreter()
        self.as_root = os.geteuid() == 0
        self.net_isolated = False
        self.problems: list[str] = []
        first = limits.uid_base + 1000 * slot
        self._uids = itertools.cycle(range(first, first + 1000))
        self._pool: list[Runner] = []
        self._refill: asyncio.Task[None] | None = None
        self.sessions: dict[str, Session] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._taken = asyncio.Event()
        self._ctl: socket.socket | None = None  # the fork server's control socket
        self._ctl_lock = asyncio.Lock()
        self._ctl_reader: asyncio.Task[None] | None = None
        self._forks: list[asyncio.Future[int]] = []
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._zygote: subprocess.Popen[bytes] | None = None
        self._dirty_uids: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # traversable, not listable: each run's dir belongs to its uid
        if self.interpreter is None:
            raise RuntimeError("no Python interpreter readable by the sandbox uid (install Debian's python3)")
        if not self.as_root:
            self.problems.append("not root: runs share the worker's uid (no uid isolation, RLIMIT_NPROC shared)")
        self.net_isolated = await self._probe_unshare()
        if not self.net_isolated:
            self.problems.append("cannot create a network namespace: sandboxed code HAS NETWORK ACCESS")
        for problem in self.problems:
            print(f"python-sandbox: WARNING: {problem}", file=sys.stderr, flush=True)
        await self._start_zygote()
        self._refill = asyncio.create_task(self._fill_pool())
        self._reaper = asyncio.create_task(self._reap_idle_sessions())
        self._sweeper = asyncio.create_task(self._sweep_uids())

    async def _probe_unshare(self) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.interpreter, "-I", "-S", "-c", "import socket; socket.create_connection(('127.0.0.1', 9), 1)",
                preexec_fn=self._preexec(None, net=True), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
        except OSError:
            return False
        return b"Network is unreachable" in err or b"unreachable" in err.lower()

    def report(self) -> dict[str, Any]:
        return {
            "interpreter": self.interpreter,
            "network_isolation": self.net_isolated,
            "uid_isolation": self.as_root,
            "warm": len(self._pool),
            "fork_server": self._ctl is not None,
            "sessions": len(self.sessions),
            "problems": self.problems,
        }

    async def close(self) -> None:
        for task in (self._refill, self._reaper, self._sweeper, self._ctl_reader):
            if task is not None:
                task.cancel()
        for runner in self._pool:
            self._kill(runner)
        for s in list(self.sessions.values()):
            await self.end_session(s.id)
        if self._dirty_uids:
            _kill_uids(self._dirty_uids)
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote.wait()

    # ------------------------------------------------------------------ spawning

    def _preexec(self, uid: int | None, net: bool) -> Callable[[], None]:
        limits = [(getattr(resource, name), value) for name, value in self._rlimits()]
        as_root = self.as_root

        def setup() -> None:  # in the child, before exec (the exec fallback; the zygote does the same)
            if net and _libc.unshare(CLONE_NEWNET) != 0:
                os._exit(71)  # the caller sees a failed start: never run without the isolation it asked for
            for which, value in limits:
                resource.setrlimit(which, value)
            if as_root and uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return setup

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/nonexistent",
            "MALLOC_ARENA_MAX": "2",  # RLIMIT_AS counts every thread arena's reservation
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def _rlimits(self) -> list[tuple[str, tuple[int, int]]]:
        lim = self.limits
        mem = BASELINE_AS + lim.memory_mb * 1024 * 1024
        fsize = lim.file_size_mb * 1024 * 1024
        return [
            ("RLIMIT_AS", (mem, mem)),
            ("RLIMIT_CPU", (lim.cpu_s, lim.cpu_s + 1)),
            ("RLIMIT_FSIZE", (fsize, fsize)),
            ("RLIMIT_NOFILE", (lim.open_files, lim.open_files)),
            ("RLIMIT_NPROC", (lim.processes, lim.processes)),
            ("RLIMIT_CORE", (0, 0)),
        ]

    async def _spawn(self, mode: str) -> Runner:
        """Through the zygote when it runs (a fork, ~1 ms); else fork + exec a fresh interpreter
        in a thread (~5 ms, and its start-up CPU)."""
        if self._ctl is not None:
            return await self._fork(mode)
        return await self._exec(mode)

    async def _readers(self, *fds: Any) -> list[asyncio.StreamReader]:
        loop = asyncio.get_running_loop()
        readers = []
        for fd in fds:
            pipe = fd if hasattr(fd, "fileno") else os.fdopen(fd, "rb", 0)
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda reader=reader: asyncio.StreamReaderProtocol(reader), pipe)
            readers.append(reader)
        return readers

    async def _fork(self, mode: str) -> Runner:
        assert self._ctl is not None
        uid = next(self._uids) if self.as_root else None
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        st_r, st_w = os.pipe()
        req = {"mode": mode, "net": self.net_isolated, "rlimits": self._rlimits(), "uid": uid,
               "cwd": str(self.root), "env": self._env()}  # fmt: skip
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        async with self._ctl_lock:
            self._forks.append(fut)
            socket.send_fds(self._ctl, [json.dumps(req).encode()], [in_r, out_w, err_w, st_w])
        for fd in (in_r, out_w, err_w, st_w):
            os.close(fd)
        pid = await fut
        exited = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        out, err, st = await self._readers(out_r, err_r, st_r)
        return Runner(pid, os.fdopen(in_w, "wb", 0), out, err, st, uid, exited)

    async def _exec(self, mode: str) -> Runner:
        uid = next(self._uids) if self.as_root else None
        r, w = os.pipe()
        assert self.interpreter is not None
        setup = self._preexec(uid, self.net_isolated)

        def preexec() -> None:
            os.dup2(w, 3)  # the status channel is fd 3 in the child
            setup()

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [self.interpreter, "-I", "-S", "-B", "-c", BOOTSTRAP, mode],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                env=self._env(), cwd=str(self.root), start_new_session=True, preexec_fn=preexec,
                pass_fds=(3, w) if w != 3 else (3,),
            )  # fmt: skip

        try:
            proc = await asyncio.to_thread(popen)
        finally:
            os.close(w)
        out, err, st = await self._readers(proc.stdout, proc.stderr, r)
        exited = asyncio.ensure_future(asyncio.to_thread(proc.wait))  # reaps it, and tells how it ended
        assert proc.stdin is not None
        return Runner(proc.pid, proc.stdin, out, err, st, uid, exited)  # type: ignore[arg-type]

    async def _start_zygote(self) -> None:
        """Start the fork server; without it runs exec a fresh interpreter each."""
        parent, child = socket.socketpair()
        argv = [self.interpreter, "-I", "-S", "-B", "-c", ZYGOTE, str(child.fileno()), BOOTSTRAP]
        if SETPRIV:  # it must not outlive this worker
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        try:
            self._zygote = subprocess.Popen(argv, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                            env={"PATH": "/usr/bin:/bin"}, cwd=str(self.root),
                                            start_new_session=True)  # fmt: skip
        except OSError as exc:
            self.problems.append(f"no fork server ({exc}); each run starts an interpreter")
            return
        finally:
            child.close()
        parent.setblocking(False)
        self._ctl = parent
        self._ctl_reader = asyncio.create_task(self._read_ctl(parent))

    async def _read_ctl(self, ctl: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buf = b""
        while True:
            data = await loop.sock_recv(ctl, 65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "pid" in msg:
                    self._forks.pop(0).set_result(msg["pid"])
                elif "exit" in msg:
                    fut = self._exits.setdefault(msg["exit"], loop.create_future())
                    if not fut.done():
                        fut.set_result(msg["code"])
                    loop.call_later(60, self._exits.pop, msg["exit"], None)
        # the fork server is gone: fall back to exec, answer whoever waits
        self._ctl = None
        self.problems.append("the fork server exited; each run now starts an interpreter")
        for fut in self._forks:
            if not fut.done():
                fut.set_exception(OSError("the fork server exited"))
        self._forks.clear()

    async def _fill_pool(self) -> None:
        """Refill as soon as an interpreter is taken (not on a timer): an empty pool means the
        next run pays a cold start."""
        while True:
            while len(self._pool) < self.limits.warm_pool:
                try:
                    self._pool.append(await self._spawn("oneshot"))
                except OSError as exc:
                    log.error("cannot start a sandbox interpreter: %s", exc)
                    await asyncio.sleep(1)
                    break
            self._taken.clear()
            await self._taken.wait()

    async def _take(self) -> Runner:
        self._taken.set()
        while self._pool:
            runner = self._pool.pop(0)
            if runner.alive:
                return runner
        return await self._spawn("oneshot")

    def _kill(self, runner: Runner) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(runner.pid, signal.SIGKILL)
        if runner.uid is not None:  # a child that left the group (setsid) is still this uid's
            self._dirty_uids.add(runner.uid)
        with contextlib.suppress(OSError):
            runner.stdin.close()

    async def _sweep_uids(self) -> None:
        """One process scan every SWEEP seconds for all uids used since: a scan per run cost more
        than the run (uids come back round only after 1,000 runs)."""
        while True:
            await asyncio.sleep(SWEEP)
            if self._dirty_uids:
                uids, self._dirty_uids = self._dirty_uids, set()
                await asyncio.to_thread(_kill_uids, uids)

    def workspace(self, name: str, uid: int | None) -> Path:
        ws = self.root / name
        ws.mkdir(mode=0o700)
        if uid is not None:
            os.chown(ws, uid, uid)
        return ws

    # ------------------------------------------------------------------ running code

    async def run_oneshot(self, source: str, name: str, args: list[str], stdin: str, files: dict[str, bytes],
                          timeout: float, emit: Emit) -> tuple[RunOutcome, Path, float]:  # fmt: skip
        runner = await self._take()
        ws = self.workspace(f"run-{uuid.uuid4().hex[:12]}", runner.uid)
        for rel, data in files.items():
            dest = ws / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            if runner.uid is not None:
                os.chown(dest, runner.uid, runner.uid)
        started = time.time()
        marker = f"\x00cogo-end-{uuid.uuid4().hex}\x00"
        request = {"cwd": str(ws), "source": source, "name": name, "args": args, "stdin": stdin, "marker": marker}
        await runner.send(request, close=True)
        try:
            outcome = await self._collect(runner, timeout, emit, marker, oneshot=True)
        finally:
            self._kill(runner)
        return outcome, ws, started

    async def _collect(
        self, runner: Runner, timeout: float, emit: Emit, marker: str, oneshot: bool = False
    ) -> RunOutcome:
        t0 = time.perf_counter()
        budget = [self.limits.output_kb * 1024]
        truncated = [False]
        killed: list[str | None] = [None]

        async def pump(stream: asyncio.StreamReader, kind: str) -> None:
            tail = ""
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                text = tail + chunk.decode("utf-8", "replace")
                idx = text.find(marker)
                if idx >= 0:
                    await self._forward(text[:idx], kind, budget, truncated, emit)
                    return
                keep = len(marker) - 1  # the marker may be split across reads
                tail, text = text[-keep:], text[:-keep]
                await self._forward(text, kind, budget, truncated, emit)
                if budget[0] < -3 * self.limits.output_kb * 1024:
                    killed[0] = "output"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(runner.pid, signal.SIGKILL)
                    return

        pumps = [asyncio.create_task(pump(runner.stdout, "stdout")), asyncio.create_task(pump(runner.stderr, "stderr"))]
        status_line = asyncio.create_task(runner.status.readline())
        # the run is over when its status line and both streams' end markers are in; children it
        # left behind are killed with the group afterwards. A run that closed its stdout cannot
        # print the marker: after the status line its streams get a short drain.
        deadline = time.monotonic() + timeout
        await asyncio.wait({status_line}, timeout=timeout)
        if status_line.done():
            await asyncio.wait(pumps, timeout=max(DRAIN, min(2.0, deadline - time.monotonic())))
        timed_out = not status_line.done()
        if timed_out:
            killed[0] = "timeout"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(runner.pid, signal.SIGKILL)
        for t in (status_line, *pumps):
            t.cancel()
        status: dict[str, Any] = {}
        if status_line.done() and not status_line.cancelled():
            with contextlib.suppress(ValueError):
                status = json.loads(status_line.result() or b"{}")
        code: int | None = status.get("done")
        sig = None
        if oneshot and code is None:  # no status: it died (signal, exit in C code): ask how
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner.exited), 1.0)
            rc = runner.exited.result() if runner.exited.done() else None
            if rc is not None and rc < 0:
                sig = -rc
                code = 128 + sig
        if status.get("error") in ("memory", "file_size"):
            killed[0] = killed[0] or status["error"]
        if sig == signal.SIGXCPU:
            killed[0] = killed[0] or "cpu"
        if sig == signal.SIGXFSZ:
            killed[0] = killed[0] or "file_size"
        if killed[0] == "output":
            truncated[0] = True
        return RunOutcome(
            code, sig, killed[0], status.get("peak_rss_mb"), truncated[0], (time.perf_counter() - t0) * 1000
        )

    async def _forward(self, text: str, kind: str, budget: list[int], truncated: list[bool], emit: Emit) -> None:
        if not text:
            return
        if budget[0] > 0:
            part = text[: budget[0]]
            await emit(kind, part)
            if len(part) < len(text):
                truncated[0] = True
        else:
            truncated[0] = True
        budget[0] -= len(text)

    # ------------------------------------------------------------------ sessions

    async def session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is not None and s.runner.alive:
            return s
        if s is not None:  # its interpreter died: start over
            await self.end_session(sid)
        if len(self.sessions) >= self.limits.max_sessions:
            raise SessionsFull(f"{len(self.sessions)} sessions are open (max_sessions); end one or wait for idle ones")
        runner = await self._spawn("session")
        ws = self.workspace(f"session-{uuid.uuid4().hex[:12]}", runner.uid)
        s = Session(sid, runner, ws)
        self.sessions[sid] = s
        return s

    async def run_in_session(self, s: Session, source: str, name: str, args: list[str], stdin: str, timeout: float,
                             emit: Emit) -> tuple[RunOutcome, float]:  # fmt: skip
        async with s.lock:
            s.last_used = time.monotonic()
            marker = f"\x00cogo-end-{uuid.uuid4().hex}\x00"
            started = time.time()
            req = {"cwd": str(s.workspace), "source": source, "name": name, "args": args, "stdin": stdin, "marker": marker,
                   "sys_path": [str(s.workspace / ".site")]}  # fmt: skip
            await s.runner.send(req, close=False)
            outcome = await self._collect(s.runner, timeout, emit, marker=marker)
            s.last_used = time.monotonic()
        if outcome.killed is not None or outcome.exit_code is None:  # the interpreter is gone or unreliable
            await self.end_session(s.id)
        return outcome, started

    async def end_session(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        self._kill(s.runner)
        self.remove_workspace(s.workspace)

    def remove_workspace(self, ws: Path) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, ws, True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_idle_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.limits.session_idle_s / 4 or 1.0))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if not s.lock.locked() and now - s.last_used > self.limits.session_idle_s:
                    log.info("session %s idle for %.0fs: ended", sid, now - s.last_used)
                    await self.end_session(sid)


@dataclass
class Session:
    id: str
    runner: Runner
    workspace: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)


class SessionsFull(Exception):
    pass


def _kill_uids(uids: set[int]) -> None:
    """SIGKILL every process of these sandbox uids (what escaped its process group)."""
    import psutil

    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real in uids:
                p.kill()
        except psutil.Error:
            continue
