"""The link's own cost per heartbeat, in isolation: the supervisor's HTTP server and LinkServer in
this process, 50 links in another process sending a heartbeat every 50 ms. Compare with
bench_health's figure for 50 real workers (same code, cold caches between heartbeats).

    .venv/bin/python -m bench.bench_link
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cogoctl.profile import parse_profile
from cogoctl.supervisor.http import HTTPServer, Request, WebSocketRoute
from cogoctl.supervisor.link import LinkServer
from cogoctl.supervisor.manager import Manager
from cogoctl.supervisor.states import State

N = 50
CLIENT = """
import asyncio, json, os, sys
from websockets.asyncio.client import unix_connect

async def one(sock, i):
    async with unix_connect(sock, uri="ws://x/api/link", ping_interval=None, compression=None) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "worker": "w", "instance": f"w-{i}",
                                  "pid": os.getpid(), "capabilities": [], "token": "t"}))
        await ws.recv()
        seq = 0
        while True:
            seq += 1
            await ws.send(json.dumps({"type": "heartbeat", "seq": seq, "active": 0, "queued": 0, "rss_mb": 20.5}))
            await asyncio.sleep(0.05)

async def main():
    await asyncio.gather(*(one(sys.argv[1], i) for i in range(int(sys.argv[2]))))

asyncio.run(main())
"""


async def main() -> None:
    d = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    sock = str(d / "s.sock")
    prof = parse_profile(
        f"workers:\n  w:\n    command: [x]\n    runtime: true\n    instances: {N}\n", str(d / "p.yaml"), {}
    )
    m = Manager(prof, d, sock, "tok")
    m.add_worker(prof.workers["w"])
    for inst in m.instances.values():  # a stand-in for spawned instances: only the link is measured
        inst.state = State.RUNNING
        inst.link_token = "t"
    links = LinkServer(m)

    async def handler(req: Request) -> WebSocketRoute:
        return WebSocketRoute(links.serve)

    http = HTTPServer(handler)
    server = await asyncio.start_unix_server(http.serve_connection, sock)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, sock, str(N)])
    await asyncio.sleep(2)
    seq0 = sum(i.heartbeat_seq for i in m.instances.values())
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    await asyncio.sleep(5)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = sum(i.heartbeat_seq for i in m.instances.values()) - seq0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    client.kill()
    client.wait()
    server.close()
    await http.close_all()
    print(f"{n} heartbeats in {time.time() - t0:.1f} s: {1e6 * cpu / n:.0f} us of supervisor CPU each "
          f"(= {100 * cpu / n * 50:.2f} % of a core for 50 instances at 1 s)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
