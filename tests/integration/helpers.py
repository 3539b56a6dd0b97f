"""Driving real cogoctl processes from tests: CLI calls, status polling with deadlines."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKERS = Path(__file__).resolve().parent / "workers"
CLI = [sys.executable, "-m", "cogoctl"]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: the sockets stay bound until all are chosen (one at a time, the
    kernel may hand out the same port twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll with a deadline; return the first truthy value of predicate()."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})")


class Cogo:
    def __init__(self, root: Path, case_tag: str) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.profile_path = root / "profile.yaml"
        self.env = dict(os.environ, COGO_STATE_DIR=str(self.state_dir), CGTEST_CASE=case_tag)
        self.env.pop("COGO_PROFILE", None)
        self.foreground: subprocess.Popen[str] | None = None

    def write_profile(self, text: str) -> Path:
        self.profile_path.write_text(text.replace("{W}", str(WORKERS)))
        return self.profile_path

    def run(
        self, *args: str, timeout: float = 60.0, profile: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*CLI, *args]
        if profile and "-p" not in args and "--profile" not in args:
            argv += ["-p", str(self.profile_path)]
        return subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def up(self, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        res = self.run("up", "-d", *extra, timeout=timeout)
        assert res.returncode == 0, f"up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res

    def status(self) -> list[dict[str, Any]]:
        res = self.run("status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["workers"]

    def instance(self, iid: str) -> dict[str, Any]:
        for w in self.status():
            if w["instance"] == iid:
                return w
        raise KeyError(iid)

    def wait_state(self, iid: str, state: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            w = self.instance(iid)
            if w["state"] == state and all(w.get(k) == v for k, v in match.items()):
                return w
            return None

        return wait_until(check, timeout, what=f"{iid} {state} {match or ''}")

    def events(self) -> list[dict[str, Any]]:
        path = self.state_dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def transitions(self, iid: str) -> list[tuple[str, str]]:
        return [(e["old"], e["new"]) for e in self.events() if e.get("kind") == "state" and e["instance"] == iid]

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.state_dir / "cogoctl.pid").read_text())
        except (OSError, ValueError):
            return None


def get_unix(cogo: Cogo, path: str) -> tuple[int, str, str]:
    """GET over the supervisor's socket: (status, content type, body)."""
    import http.client

    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(cogo.state_dir / "cogoctl.sock"))

    conn = Unix("localhost", timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()


def worker_active(port: int) -> int:
    """Tasks in progress on a runtime worker, from its own GET /health (no heartbeat delay)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        return int(json.loads(resp.read())["active"])


async def until_active(port: int, n: int, timeout: float = 15.0) -> None:
    """Poll, with a deadline, until the worker runs n tasks (from async tests)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(worker_active, port) != n:
        if time.monotonic() > deadline:
            raise AssertionError(f"worker on {port} never had {n} active tasks")
        await asyncio.sleep(0.02)
