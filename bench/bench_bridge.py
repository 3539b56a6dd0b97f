"""The bridge vs a direct connection to the same TCP echo worker, same run: throughput (MB/s,
bytes echoed through) and round-trip latency of 1-byte ping-pongs, with 1 and 32 connections.

    .venv/bin/python -m bench.bench_bridge [--mb N] [--pings N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time

from bench.common import COGOCTL, ROOT, TempDir, cogo_env, free_ports, machine, pct

ECHO = ROOT / "tests" / "integration" / "workers" / "tcp_echo.py"


async def throughput(port: int, conns: int, mb_each: int) -> float:
    payload = b"\0" * (1 << 20)

    async def one() -> int:
        r, w = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            for _ in range(mb_each):
                w.write(payload)
                await w.drain()
            w.write_eof()

        sender = asyncio.create_task(send())
        got = 0
        while chunk := await r.read(1 << 16):
            got += len(chunk)
        await sender
        w.close()
        return got

    t0 = time.perf_counter()
    total = sum(await asyncio.gather(*(one() for _ in range(conns))))
    return total / (time.perf_counter() - t0) / 1e6


async def pings(port: int, conns: int, n: int) -> list[float]:
    out: list[float] = []

    async def one() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(n + 50):
            t0 = time.perf_counter()
            w.write(b"x")
            await r.readexactly(1)
            if i >= 50:
                out.append(time.perf_counter() - t0)
        w.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--pings", type=int, default=2000)
    args = ap.parse_args()
    legacy, target = free_ports(2)
    with TempDir() as d:
        (d / "p.yaml").write_text(f"""
workers:
  echo:
    command: [python, {ECHO}]
    port: {target}
    health_check: null
    min_uptime: 200ms
legacy_support:
  enabled: true
  port_redirection: {{{legacy}: {target}}}
""")
        env = cogo_env(d / "state")
        subprocess.run([*COGOCTL, "up", "-d", "-p", str(d / "p.yaml")], env=env, check=True, capture_output=True)
        rows = []
        try:
            for conns, mb in ((1, args.mb), (32, max(1, args.mb // 8))):
                direct = asyncio.run(throughput(target, conns, mb))
                bridged = asyncio.run(throughput(legacy, conns, mb))
                n = args.pings if conns == 1 else max(100, args.pings // 32)
                lat_d = asyncio.run(pings(target, conns, n))
                lat_b = asyncio.run(pings(legacy, conns, n))
                rows.append((conns, mb, direct, bridged, lat_d, lat_b))
        finally:
            subprocess.run([*COGOCTL, "down", "-p", str(d / "p.yaml")], env=env, capture_output=True)
    print(f"machine: {machine()}; echo worker in Python (threads); bridge supervised by cogoctl up\n")
    print(
        "| connections | throughput direct | through the bridge | ratio | p50 RTT direct | p50 RTT bridge | added p50 | p99 bridge |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for conns, mb, direct, bridged, lat_d, lat_b in rows:
        d50, b50 = statistics.median(lat_d) * 1000, statistics.median(lat_b) * 1000
        print(f"| {conns} ({mb} MB each way each) | {direct:.0f} MB/s | {bridged:.0f} MB/s | {bridged / direct:.2f}x | "
              f"{d50:.3f} ms | {b50:.3f} ms | {b50 - d50:.3f} ms | {pct(lat_b, 99) * 1000:.3f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
