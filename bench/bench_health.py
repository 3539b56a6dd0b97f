"""Hang detection: SIGSTOP a runtime worker; time until UNHEALTHY and until a replacement is
RUNNING, with 1 s and 200 ms heartbeat intervals (3 misses). supervisord and circus watch the
same SIGSTOPped worker for a while in the same run. Then the supervisor's idle CPU with 50
instances heartbeating every second.

    .venv/bin/python -m bench.bench_health [--runs N] [--idle-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import psutil

from bench.bench_core import Circus, Supervisord, kill_leftovers
from bench.common import COGOCTL, ROOT, TempDir, cogo_env, free_port, machine, tools_venv, wait_health

NOOP = ROOT / "bench" / "noop_worker.py"


def profile(d: Path, interval: str, instances: int = 1, port: bool = True) -> Path:
    path = d / "p.yaml"
    path.write_text(
        f"""
manager:
  metrics_interval: 2s
workers:
  noop:
    command: [python, {NOOP}]
    runtime: true
    port: {0 if port else "null"}
    instances: {instances}
    heartbeat_interval: {interval}
    heartbeat_misses: 3
    hang_kill_timeout: 1s
    health_check: null
    restart: {{stable_after: 100ms, start_limit: 1000}}
"""
    )
    return path


def cogo(d: Path, *args: str) -> str:
    return subprocess.run([*COGOCTL, *args, "-p", str(d / "p.yaml")], env=cogo_env(d / "state"), check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


def events(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "state" / "events.jsonl").read_text().splitlines()]


def detection(interval: str, runs: int) -> tuple[list[float], list[float]]:
    to_unhealthy, to_running = [], []
    with TempDir() as d:
        profile(d, interval)
        cogo(d, "up", "-d")
        try:
            for _ in range(runs):
                w = json.loads(cogo(d, "status", "--json"))["workers"][0]
                t0 = time.time()
                os.kill(w["pid"], signal.SIGSTOP)
                deadline = time.time() + 30
                un = run = None
                while time.time() < deadline and run is None:
                    time.sleep(0.02)
                    for e in events(d):
                        if e.get("kind") == "state" and e["time"] >= t0 - 0.001:
                            if e["new"] == "UNHEALTHY" and un is None:
                                un = e["time"] - t0
                            if e["new"] == "RUNNING" and un is not None:
                                run = e["time"] - t0
                to_unhealthy.append(un)
                to_running.append(run)
                time.sleep(0.5)
        finally:
            cogo(d, "down")
    return to_unhealthy, to_running


def others_notice(runner_cls, bin_: Path, watch: float) -> str:
    """SIGSTOP the worker under supervisord/circus; does anything change within `watch` s?"""
    with TempDir() as d:
        port = free_port()
        r = runner_cls(d, [port], bin_)
        r.up()
        try:
            wait_health(port)
            pid = next(p.pid for p in psutil.process_iter(["cmdline"]) if any("tiny_worker" in c for c in (p.info["cmdline"] or []))
                       and psutil.Process(p.pid).environ().get("PORT") == str(port))  # fmt: skip
            os.kill(pid, signal.SIGSTOP)
            time.sleep(watch)
            same = psutil.pid_exists(pid) and psutil.Process(pid).status() == psutil.STATUS_STOPPED
            os.kill(pid, signal.SIGCONT)
            return f"not noticed in {watch:g} s (same pid, still stopped)" if same else "restarted"
        finally:
            r.down()
            kill_leftovers([port])


def idle_cpu(instances: int, seconds: float) -> tuple[float, float]:
    with TempDir() as d:
        profile(d, "1s", instances=instances, port=False)
        cogo(d, "up", "-d")
        try:
            pid = int((d / "state" / "cogoctl.pid").read_text())
            proc = psutil.Process(pid)
            time.sleep(3)  # let start-up settle
            c0 = proc.cpu_times()
            t0 = time.monotonic()
            time.sleep(seconds)
            c1 = proc.cpu_times()
            used = (c1.user + c1.system) - (c0.user + c0.system)
            rss = proc.memory_info().rss / 1048576
            return 100 * used / (time.monotonic() - t0), rss
        finally:
            cogo(d, "down")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=30)
    args = ap.parse_args()
    bin_ = tools_venv()
    print(f"machine: {machine()}; medians of {args.runs} SIGSTOPs per interval\n")
    print(
        "| heartbeat interval x misses | window | SIGSTOP → UNHEALTHY (median, max) | SIGSTOP → replacement RUNNING (median) |"
    )
    print("|---|---|---|---|")
    for interval, window in (("1s", 3.0), ("200ms", 0.6)):
        un, run = detection(interval, args.runs)
        print(f"| {interval} x 3 | {window:g} s | {statistics.median(un) * 1000:.0f} ms, {max(un) * 1000:.0f} ms "
              f"(window + {(statistics.median(un) - window) * 1000:.0f} ms) | {statistics.median(run) * 1000:.0f} ms |")  # fmt: skip
    print()
    print(f"| supervisord | {others_notice(Supervisord, bin_, 10)} |")
    print(f"| circus | {others_notice(Circus, bin_, 10)} |")
    cpu, rss = idle_cpu(50, args.idle_seconds)
    print(f"\nsupervisor CPU, 50 instances heartbeating every 1 s, idle {args.idle_seconds:g} s: "
          f"{cpu:.2f} % of one core (RSS {rss:.1f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
