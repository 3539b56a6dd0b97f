"""python-sandbox speed: `print(1)` through the worker's port and through POST /api/workers/execute
(p50, p99), against a cold `python3 -c 'print(1)'` subprocess in the same run; throughput of
short runs with 2 instances.

    .venv/bin/python -m bench.bench_sandbox [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

from websockets.asyncio.client import connect

from bench.bench_dispatch import HttpClient, throughput_supervisor
from bench.common import COGOCTL, TempDir, cogo_env, machine, pct

BODY = json.dumps({"workerType": "python-sandbox", "task": {"action": "run", "payload": {"code": "print(1)"}}}).encode()


async def via_supervisor(sock: str, n: int) -> list[float]:
    c = await HttpClient(sock).open()
    out = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        assert await c.execute(BODY) == 200
        if i >= 20:
            out.append(time.perf_counter() - t0)
    return out


async def via_port(port: int, token: str, n: int) -> list[float]:
    out = []
    async with connect(
        f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {token}"}, compression=None
    ) as ws:
        for i in range(n + 20):
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "task", "id": str(i), "capability": "python-execution", "action": "run",
                                      "payload": {"code": "print(1)"}}))  # fmt: skip
            while json.loads(await ws.recv())["type"] not in ("result", "error"):
                pass
            if i >= 20:
                out.append(time.perf_counter() - t0)
    return out


def cold(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-c", "print(1)"], check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with TempDir() as d:
        (d / "p.yaml").write_text("""
workers:
  python-sandbox:
    command: [python, -m, workers.python_sandbox]
    runtime: true
    port: 0
    instances: 2
    max_concurrency: 8
    heartbeat_interval: 5s
    options: {warm_pool: 4}
""")
        env = cogo_env(d / "state")
        subprocess.run([*COGOCTL, "up", "-d", "-p", str(d / "p.yaml")], env=env, check=True, capture_output=True)
        try:
            status = json.loads(subprocess.run([*COGOCTL, "status", "--json", "-p", str(d / "p.yaml")], env=env,
                                               check=True, capture_output=True, text=True).stdout)  # fmt: skip
            port = status["workers"][0]["port"]
            token = (d / "state" / "worker.token").read_text().strip()
            sock = str(d / "state" / "cogoctl.sock")
            anchor = cold(max(30, args.runs // 10))
            worker = asyncio.run(via_port(port, token, args.runs))
            sup = asyncio.run(via_supervisor(sock, args.runs))
            tput = asyncio.run(throughput_supervisor(sock, 16, args.seconds, BODY))
        finally:
            subprocess.run([*COGOCTL, "down", "-p", str(d / "p.yaml")], env=env, capture_output=True)
    m = statistics.median
    print(f"machine: {machine()}; {args.runs} sequential runs per path; {args.seconds:g} s of 16 clients\n")
    print("| path | p50 | p99 |\n|---|---|---|")
    print(
        f"| cold `/usr/bin/python3 -c 'print(1)'` subprocess (anchor) | {m(anchor) * 1000:.1f} ms | {pct(anchor, 99) * 1000:.1f} ms |"
    )
    print(
        f"| print(1) at the worker's port (WebSocket) | {m(worker) * 1000:.1f} ms | {pct(worker, 99) * 1000:.1f} ms |"
    )
    print(f"| print(1) through POST /api/workers/execute | {m(sup) * 1000:.1f} ms | {pct(sup, 99) * 1000:.1f} ms |")
    print(f"\nthroughput of print(1) runs, 2 instances, 16 clients: {tput:.0f} runs/s")


if __name__ == "__main__":
    main()
