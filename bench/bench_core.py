"""Supervisor core vs supervisord (and circus), same machine, same run, same tiny worker.

    .venv/bin/python bench/bench_core.py [--runs N]

Measures: the tiny worker's bare cold start (the anchor); SIGKILL of a worker -> replacement
answering /health; `status` wall time with 3 and 50 workers; `up -d` until 3 workers answer
/health; the supervisor's idle RSS with 50 workers. Installs supervisor and circus into
bench/.venv-tools (not project dependencies). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from bench.common import (
    COGOCTL,
    PY,
    ROOT,
    TempDir,
    cogo_env,
    free_port,
    free_ports,
    machine,
    median_ms,
    tools_venv,
    wait_down,
    wait_health,
)

TINY = ROOT / "bench" / "tiny_worker.py"


# ---------------------------------------------------------------------------- configs


def cogo_profile(d: Path, ports: list[int]) -> Path:
    lines = ["workers:"]
    for i, port in enumerate(ports):
        lines += [
            f"  w{i}:",
            f"    command: [python, {TINY}]",
            f"    port: {port}",
            "    health_check: {interval: 30s}",
            "    stop_timeout: 2s",
            # supervisord restarts at once every time; so does cogoctl once a run lasted stable_after
            "    restart: {stable_after: 100ms, start_limit: 1000}",
        ]
    path = d / "profile.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def supervisord_conf(d: Path, ports: list[int]) -> Path:
    parts = [
        f"[unix_http_server]\nfile={d}/sup.sock\n",
        f"[supervisord]\nlogfile={d}/sup.log\npidfile={d}/sup.pid\nchildlogdir={d}\n",
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{d}/sup.sock\n",
    ]
    for i, port in enumerate(ports):
        parts.append(
            f'[program:w{i}]\ncommand={PY} {TINY}\nenvironment=PORT="{port}"\nautorestart=true\n'
            "startsecs=0\nstartretries=100\nstopwaitsecs=2\n"
        )
    path = d / "supervisord.conf"
    path.write_text("\n".join(parts))
    return path


def circus_conf(d: Path, ports: list[int]) -> Path:
    parts = [
        f"[circus]\ncheck_delay = 5\nendpoint = ipc://{d}/circus.sock\npubsub_endpoint = ipc://{d}/circus-pub.sock\n"
        f"statsd = false\npidfile = {d}/circus.pid\n"
    ]
    for i, port in enumerate(ports):
        parts.append(f"[watcher:w{i}]\ncmd = {PY} {TINY}\nnumprocesses = 1\n\n[env:w{i}]\nPORT = {port}\n")
    path = d / "circus.ini"
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------------------- runners


class Cogo:
    cgroups = True

    def __init__(self, d: Path, ports: list[int]) -> None:
        self.profile = cogo_profile(d, ports)
        self.env = cogo_env(d / "state")
        if not self.cgroups:
            self.env["COGO_CGROUPS"] = "0"
        self.state = d / "state"

    def up(self) -> None:
        subprocess.run([*COGOCTL, "up", "-d", "-p", str(self.profile)], env=self.env, check=True, capture_output=True)

    def status(self) -> None:
        subprocess.run([*COGOCTL, "status", "-p", str(self.profile)], env=self.env, check=True, capture_output=True)

    def pids(self) -> list[int]:
        import json

        out = subprocess.run([*COGOCTL, "status", "--json", "-p", str(self.profile)], env=self.env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        return [w["pid"] for w in json.loads(out)["workers"]]

    def daemon_pid(self) -> int:
        return int((self.state / "cogoctl.pid").read_text())

    def down(self) -> None:
        subprocess.run([*COGOCTL, "down", "-p", str(self.profile)], env=self.env, capture_output=True)


class CogoNoCgroups(Cogo):
    cgroups = False


class _Tool:
    """A supervisor we compare with, installed in bench/.venv-tools."""

    @staticmethod
    def write_conf(d: Path, ports: list[int]) -> Path:
        raise NotImplementedError

    def __init__(self, d: Path, ports: list[int], bin_: Path) -> None:
        self.conf = self.write_conf(d, ports)
        self.bin = bin_
        self.d = d

    @staticmethod
    def wait_gone(pid: int) -> None:
        if psutil.pid_exists(pid):
            psutil.wait_procs([psutil.Process(pid)], timeout=20)


class Supervisord(_Tool):
    write_conf = staticmethod(supervisord_conf)

    def up(self) -> None:
        subprocess.run([str(self.bin / "supervisord"), "-c", str(self.conf)], check=True)

    def ctl(self, *args: str) -> str:
        return subprocess.run([str(self.bin / "supervisorctl"), "-c", str(self.conf), *args], capture_output=True,
                              text=True).stdout  # fmt: skip

    def status(self) -> None:
        self.ctl("status")

    def pids(self) -> list[int]:
        return [int(line.split("pid ")[1].split(",")[0]) for line in self.ctl("status").splitlines() if "pid " in line]

    def daemon_pid(self) -> int:
        return int((self.d / "sup.pid").read_text())

    def down(self) -> None:
        pid = self.daemon_pid()
        self.ctl("shutdown")
        self.wait_gone(pid)


class Circus(_Tool):
    write_conf = staticmethod(circus_conf)

    def up(self) -> None:
        subprocess.run([str(self.bin / "circusd"), "--daemon", str(self.conf)], check=True, capture_output=True)

    def daemon_pid(self) -> int:
        for _ in range(200):
            try:
                return int((self.d / "circus.pid").read_text())
            except (OSError, ValueError):
                time.sleep(0.01)
        raise RuntimeError("no circus pid file")

    def down(self) -> None:
        try:
            pid = self.daemon_pid()
        except RuntimeError:
            return
        subprocess.run([str(self.bin / "circusctl"), "--endpoint", f"ipc://{self.d}/circus.sock", "quit"],
                       capture_output=True, timeout=30)  # fmt: skip
        self.wait_gone(pid)


def kill_leftovers(ports: list[int]) -> None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(str(TINY) == c for c in cmd):
            try:
                p.kill()
            except psutil.Error:
                pass


# ---------------------------------------------------------------------------- measurements


def cold_start(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([PY, str(TINY)], env=dict(os.environ, PORT=str(port)))
        wait_health(port)
        out.append(time.perf_counter() - t0)
        proc.kill()
        proc.wait()
    return out


def kill_to_healthy(runner_cls, runs: int, bin_: Path | None) -> list[float]:
    out = []
    with TempDir() as d:
        port = free_port()
        r = runner_cls(d, [port]) if bin_ is None else runner_cls(d, [port], bin_)
        r.up()
        try:
            wait_health(port)
            for _ in range(runs):
                pid = r.pids()[0]
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                wait_down(port)
                wait_health(port)
                out.append(time.perf_counter() - t0)
                time.sleep(0.3)  # let the supervisor settle before the next kill
        finally:
            r.down()
    return out


def started(runner_cls, d: Path, ports: list[int], bin_: Path | None):
    """The supervisor under test, up, with every worker answering /health."""
    r = runner_cls(d, ports) if bin_ is None else runner_cls(d, ports, bin_)
    r.up()
    for p in ports:
        wait_health(p)
    return r


def status_time(runner_cls, n: int, runs: int, bin_: Path | None) -> list[float]:
    out = []
    with TempDir() as d:
        ports = free_ports(n)
        r = started(runner_cls, d, ports, bin_)
        try:
            r.status()  # warm the page cache
            for _ in range(runs):
                t0 = time.perf_counter()
                r.status()
                out.append(time.perf_counter() - t0)
        finally:
            r.down()
    return out


def up_to_healthy(runner_cls, runs: int, bin_: Path | None) -> list[float]:
    out = []
    for _ in range(runs):
        with TempDir() as d:
            ports = free_ports(3)
            t0 = time.perf_counter()
            r = started(runner_cls, d, ports, bin_)
            out.append(time.perf_counter() - t0)
            r.down()
            kill_leftovers(ports)
    return out


def idle_rss(runner_cls, n: int, bin_: Path | None, settle: float = 5.0) -> float:
    with TempDir() as d:
        ports = free_ports(n)
        r = started(runner_cls, d, ports, bin_)
        try:
            time.sleep(settle)  # idle on purpose: RSS after settling
            return psutil.Process(r.daemon_pid()).memory_info().rss / 1048576
        finally:
            r.down()
            kill_leftovers(ports)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    n = args.runs
    bin_ = tools_venv()
    rows: list[tuple[str, str, str, str]] = []
    cold = median_ms(cold_start(n))
    rows.append(("bare cold start of the tiny worker (anchor)", f"{cold} ms", "", ""))
    c = median_ms(kill_to_healthy(Cogo, n, None))
    c0 = median_ms(kill_to_healthy(CogoNoCgroups, n, None))
    s = median_ms(kill_to_healthy(Supervisord, n, bin_))
    rows.append(("SIGKILL → replacement answers /health", f"{c} ms ({c / cold:.2f}x cold start)", f"{s} ms", ""))
    rows.append(("  same, `COGO_CGROUPS=0` (process groups only)", f"{c0} ms ({c0 / cold:.2f}x cold start)", "", ""))
    for k in (3, 50):
        c = median_ms(status_time(Cogo, k, n, None))
        s = median_ms(status_time(Supervisord, k, n, bin_))
        rows.append((f"`status` wall time, {k} workers", f"{c} ms ({c / s:.2f}x supervisorctl)", f"{s} ms", ""))
    runs_up = max(3, n // 2)
    c = median_ms(up_to_healthy(Cogo, runs_up, None))
    s = median_ms(up_to_healthy(Supervisord, runs_up, bin_))
    ci = median_ms(up_to_healthy(Circus, runs_up, bin_))
    rows.append(("`up -d` → 3 workers answer /health", f"{c} ms", f"{s} ms", f"{ci} ms"))
    c = idle_rss(Cogo, 50, None)
    s = idle_rss(Supervisord, 50, bin_)
    ci = idle_rss(Circus, 50, bin_)
    rows.append(
        ("supervisor RSS, idle, 50 workers", f"{c:.1f} MB ({c / s:.2f}x supervisord)", f"{s:.1f} MB", f"{ci:.1f} MB")
    )
    print(f"machine: {machine()}; medians of {n} runs ({runs_up} for up -d)\n")
    print("| measure | cogoctl | supervisord | circus |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
