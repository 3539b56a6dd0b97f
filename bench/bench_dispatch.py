"""Dispatch overhead of the balancer: a no-op task through POST /api/workers/execute on the Unix
socket (p50, p99, one client), and throughput with 2 instances and 32 concurrent clients; in the
same run, a direct WebSocket round trip to one worker (the floor) and the ratio.

    .venv/bin/python -m bench.bench_dispatch [--requests N] [--seconds S]

Clients are asyncio + h11 (HTTP) and websockets (direct), in this process; they share the
machine's 2 cores with the supervisor and the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

import h11
from websockets.asyncio.client import connect

from bench.common import COGOCTL, ROOT, TempDir, cogo_env, machine, pct

NOOP = ROOT / "bench" / "noop_worker.py"
BODY = json.dumps({"workerType": "noop", "task": {"action": "noop", "payload": {}}}).encode()


class HttpClient:
    """One keep-alive HTTP/1.1 connection over the Unix socket (h11 does the parsing)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def open(self) -> HttpClient:
        self.reader, self.writer = await asyncio.open_unix_connection(self.path)
        self.conn = h11.Connection(h11.CLIENT)
        return self

    async def execute(self, body: bytes = BODY) -> int:
        req = h11.Request(method="POST", target="/api/workers/execute",
                          headers=[("Host", "x"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])  # fmt: skip
        self.writer.write(
            self.conn.send(req) + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        )
        status = 0
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.EndOfMessage):
                self.conn.start_next_cycle()
                return status


async def latency_supervisor(sock: str, n: int) -> list[float]:
    c = await HttpClient(sock).open()
    for _ in range(200):  # warm-up
        await c.execute()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert await c.execute() == 200
        out.append(time.perf_counter() - t0)
    return out


async def latency_direct(port: int, token: str, n: int) -> list[float]:
    async with connect(f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {token}"},
                       compression=None) as ws:  # fmt: skip
        out = []
        for i in range(n + 200):
            t0 = time.perf_counter()
            await ws.send(
                json.dumps({"type": "task", "id": str(i), "capability": "noop", "action": "noop", "payload": {}})
            )
            assert json.loads(await ws.recv())["type"] == "result"
            if i >= 200:
                out.append(time.perf_counter() - t0)
        return out


async def throughput_supervisor(sock: str, clients: int, seconds: float, body: bytes = BODY) -> float:
    """Tasks per second with `clients` keep-alive connections each posting `body` in a loop."""
    conns = [await HttpClient(sock).open() for _ in range(clients)]
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(c: HttpClient) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            assert await c.execute(body) == 200
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in conns))
    return done / (time.perf_counter() - t0)


async def throughput_direct(port: int, token: str, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        async with connect(f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {token}"},
                           compression=None) as ws:  # fmt: skip
            i = 0
            while time.perf_counter() < stop:
                i += 1
                await ws.send(json.dumps({"type": "task", "id": str(i), "capability": "noop", "action": "noop"}))
                await ws.recv()
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with TempDir() as d:
        (d / "p.yaml").write_text(f"""
workers:
  noop:
    command: [python, {NOOP}]
    runtime: true
    port: 0
    instances: 2
    max_concurrency: 64
    queue_limit: 10000
    heartbeat_interval: 5s
    health_check: null
""")
        env = cogo_env(d / "state")
        subprocess.run([*COGOCTL, "up", "-d", "-p", str(d / "p.yaml")], env=env, check=True, capture_output=True)
        try:
            sock = str(d / "state" / "cogoctl.sock")
            status = json.loads(subprocess.run([*COGOCTL, "status", "--json", "-p", str(d / "p.yaml")], env=env,
                                               check=True, capture_output=True, text=True).stdout)  # fmt: skip
            port = status["workers"][0]["port"]
            token = (d / "state" / "worker.token").read_text().strip()
            sup = asyncio.run(latency_supervisor(sock, args.requests))
            direct = asyncio.run(latency_direct(port, token, args.requests))
            tput = asyncio.run(throughput_supervisor(sock, 32, args.seconds))
            tput_direct = asyncio.run(throughput_direct(port, token, 32, args.seconds))
        finally:
            subprocess.run([*COGOCTL, "down", "-p", str(d / "p.yaml")], env=env, capture_output=True)
    p50, p99 = statistics.median(sup) * 1000, pct(sup, 99) * 1000
    d50, d99 = statistics.median(direct) * 1000, pct(direct, 99) * 1000
    print(f"machine: {machine()}; {args.requests} sequential requests each; {args.seconds:g} s of 32 clients\n")
    print("| path | p50 | p99 | throughput, 32 clients |\n|---|---|---|---|")
    print(
        f"| POST /api/workers/execute (unix socket → supervisor → 2 instances) | {p50:.2f} ms | {p99:.2f} ms | {tput:.0f} tasks/s |"
    )
    print(
        f"| direct WebSocket to one worker (the floor) | {d50:.2f} ms | {d99:.2f} ms | {tput_direct:.0f} tasks/s (1 instance) |"
    )
    print(f"| ratio supervisor / direct | {p50 / d50:.2f}x | {p99 / d99:.2f}x | {tput / tput_direct:.2f}x |")


if __name__ == "__main__":
    main()
