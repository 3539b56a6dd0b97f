"""Load balancer with real supervisor and runtime workers: routing, priorities, bounds, deadlines,
instance loss, rolling restart and scaling under load, `cogoctl exec`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import unix_connect

from cogoctl.client import Client
from cogoctl.errors import ApiError
from tests.integration.helpers import CLI, until_active, wait_until

pytestmark = pytest.mark.timeout(120)


def profile(instances: int = 1, concurrency: int = 4, queue_limit: int = 100, extra: str = "") -> str:
    return f"""
workers:
  rt:
    command: [python, {{W}}/rt_worker.py]
    runtime: true
    port: 0
    instances: {instances}
    max_concurrency: {concurrency}
    queue_limit: {queue_limit}
    heartbeat_interval: 500ms
    stop_timeout: 5s
    health_check: null
{extra}
"""


def client(cogo) -> Client:
    return Client(str(cogo.state_dir / "cogoctl.sock"), timeout=60)


def execute(cogo, action: str, payload: dict | None = None, **kw) -> tuple[int, dict]:
    body = {"workerType": "rt", "task": {"action": action, "payload": payload or {}}, **kw}
    try:
        return 200, client(cogo).post("/api/workers/execute", body)
    except ApiError as exc:
        return exc.status, {"error": {"code": exc.code, "message": str(exc)}}


def balancer(cogo, key: str) -> int:
    """The balancer's view of worker rt (queued, inflight, success, ...)."""
    return json.loads(cogo.run("status", "--json").stdout)["balancer"]["workers"]["rt"].get(key, 0)


def test_tasks_spread_over_three_instances(cogo):
    cogo.write_profile(profile(instances=3, concurrency=2))
    cogo.up()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: execute(cogo, "sleep", {"s": 0.1}), range(30)))
    assert all(status == 200 for status, _ in answers), answers
    spread = Counter(a["instance"] for _, a in answers)
    assert set(spread) == {"rt-0", "rt-1", "rt-2"}, spread
    assert min(spread.values()) >= 5, spread
    status = json.loads(cogo.run("status", "--json").stdout)
    assert status["balancer"]["workers"]["rt"]["success"] == 30
    assert "balancer rt (least-outstanding): queued 0, inflight 0, accepted 30, success 30" in cogo.run("status").stdout
    top = cogo.run("top", "-n", "1").stdout
    assert "balancer" in top and "IN FLIGHT" in top and " 30 " in top


def test_priority_order_under_saturation(cogo):
    cogo.write_profile(profile(concurrency=1))
    cogo.up()
    order: list[str] = []
    lock = threading.Lock()

    def run(tag: str, prio: str, s: float) -> None:
        status, ans = execute(cogo, "sleep", {"s": s, "tag": tag}, priority=prio)
        assert status == 200, ans
        with lock:
            order.append(tag)

    blocker = threading.Thread(target=run, args=("blocker", "normal", 1.0))
    blocker.start()
    wait_until(lambda: balancer(cogo, "inflight") == 1, what="blocker in flight")
    threads = []
    for tag, prio in [("low1", "low"), ("normal1", "normal"), ("high1", "high"), ("low2", "low"), ("high2", "high")]:
        t = threading.Thread(target=run, args=(tag, prio, 0.01))
        t.start()
        threads.append(t)
        expected = len(threads)
        wait_until(lambda: balancer(cogo, "queued") == expected, what="queued")  # noqa: B023
    for t in [blocker, *threads]:
        t.join(30)
    assert order == ["blocker", "high1", "high2", "normal1", "low1", "low2"]


def test_queue_full_is_refused_at_once_with_overloaded(cogo):
    cogo.write_profile(profile(concurrency=1, queue_limit=2))
    cogo.up()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(execute, cogo, "sleep", {"s": 1.5}) for _ in range(3)]  # 1 running + 2 queued
        wait_until(lambda: balancer(cogo, "queued") == 2, what="queue full")
        t0 = time.monotonic()
        status, body = execute(cogo, "echo")
        assert time.monotonic() - t0 < 1.0
        assert status == 429 and body["error"]["code"] == "OVERLOADED"
        assert all(f.result()[0] == 200 for f in futures)
    res = cogo.run("exec", "rt", "-c", "x")
    assert res.returncode == 0  # the queue drained


def test_timeout_cancels_the_task_on_the_worker(cogo):
    cogo.write_profile(profile())
    cogo.up()
    t0 = time.monotonic()
    status, body = execute(cogo, "sleep", {"s": 30}, timeout_s=0.5)
    assert status == 504 and body["error"]["code"] == "TIMEOUT"
    assert time.monotonic() - t0 < 5
    # the worker saw the cancel: its task ended (active 0, a failed task counted)
    wait_until(lambda: (w := cogo.instance("rt-0"))["tasks_failed"] == 1 and w["active"] == 0, what="cancel seen")


def test_sigkill_instances_with_tasks_in_flight_every_task_answered(cogo):
    cogo.write_profile(profile(instances=2, concurrency=4))
    cogo.up()
    victims = [w["pid"] for w in cogo.status()]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(execute, cogo, "sleep", {"s": 4.0}, idempotent=(i % 2 == 0)) for i in range(8)]
        wait_until(lambda: balancer(cogo, "inflight") == 8, what="all in flight")
        for pid in victims:  # both: where each task ran does not matter then
            os.kill(pid, signal.SIGKILL)
        answers = [f.result(timeout=60) for f in futures]
    outcome = [200 if s == 200 else a["error"]["code"] for s, a in answers]
    assert outcome[1::2] == ["WORKER_LOST"] * 4, outcome  # not idempotent: answered, not retried
    assert outcome[0::2] == [200] * 4, outcome  # idempotent: re-queued, run once the instances are back
    totals = json.loads(cogo.run("status", "--json").stdout)["balancer"]["totals"]
    assert totals["retried"] == 4 and totals["lost"] == 4


class Stream:
    """A steady stream of tasks in background threads; counts every answer."""

    def __init__(self, cogo, workers: int = 4) -> None:
        self.cogo = cogo
        self.stop = threading.Event()
        self.results: Counter[str] = Counter()
        self.errors: list[dict] = []
        self.threads = [threading.Thread(target=self._loop) for _ in range(workers)]

    def _loop(self) -> None:
        while not self.stop.is_set():
            status, body = execute(self.cogo, "sleep", {"s": 0.05}, timeout_s=30)
            self.results["ok" if status == 200 else body["error"]["code"]] += 1
            if status != 200:
                self.errors.append(body)

    def __enter__(self) -> Stream:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_rolling_restart_under_load_has_zero_failed_tasks(cogo):
    cogo.write_profile(profile(instances=3))
    cogo.up()
    before = {w["instance"]: w["pid"] for w in cogo.status()}
    with Stream(cogo) as stream:
        wait_until(lambda: stream.results["ok"] > 20, what="traffic")
        res = cogo.run("restart", "rt")
        assert res.returncode == 0, res.stderr
        after_restart = stream.results["ok"]
        wait_until(lambda: stream.results["ok"] > after_restart + 20, what="traffic after")
    assert stream.errors == [], stream.errors[:3]
    after = {w["instance"]: w["pid"] for w in cogo.status()}
    assert all(after[i] != before[i] for i in before)
    # one at a time: each instance was RUNNING again before the next one stopped
    events = [e for e in cogo.events() if e.get("kind") == "state"]
    stops = [k for k, e in enumerate(events) if e["new"] == "STOPPING"]
    runs = [k for k, e in enumerate(events) if e["new"] == "RUNNING" and e["old"] == "STARTING"][3:]
    assert len(stops) == 3 and len(runs) == 3
    assert stops[0] < runs[0] < stops[1] < runs[1] < stops[2] < runs[2]


def test_scale_1_3_1_under_load(cogo):
    cogo.write_profile(profile(instances=1))
    cogo.up()
    with Stream(cogo) as stream:
        wait_until(lambda: stream.results["ok"] > 10, what="traffic")
        assert cogo.run("scale", "rt", "3").returncode == 0
        assert [w["state"] for w in cogo.status()] == ["RUNNING"] * 3
        mark = stream.results["ok"]
        wait_until(lambda: stream.results["ok"] > mark + 30, what="traffic on 3")
        assert cogo.run("scale", "rt", "1").returncode == 0
        assert [w["instance"] for w in cogo.status()] == ["rt-0"]
        mark = stream.results["ok"]
        wait_until(lambda: stream.results["ok"] > mark + 10, what="traffic on 1")
    assert stream.errors == [], stream.errors[:3]
    scales = [e for e in cogo.events() if e["kind"] == "scale"]
    assert [(e["old"], e["new"]) for e in scales] == [(1, 3), (3, 1)]


def test_autoscaling_between_min_and_max(cogo):
    cogo.write_profile(
        profile(
            concurrency=1,
            extra="    min_instances: 1\n    max_instances: 2\n    scale_up_queue: 1\n    scale_cooldown: 1s\n",
        )
    )
    cogo.up()
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(execute, cogo, "sleep", {"s": 0.5}) for _ in range(6)]
        wait_until(lambda: len(cogo.status()) == 2, what="scaled up")
        assert all(f.result()[0] == 200 for f in futures)
    wait_until(lambda: len(cogo.status()) == 1, timeout=20, what="scaled down when idle")
    reasons = [e["reason"] for e in cogo.events() if e["kind"] == "scale"]
    assert reasons[0].startswith("autoscale: ") and "queued" in reasons[0]
    assert "idle" in reasons[-1]


def test_exec_streams_and_exits_with_the_task_code(cogo):
    cogo.write_profile(profile())
    cogo.up()
    for code in (0, 1, 3):
        res = cogo.run("exec", "rt", "-c", f"hello {code}", f"exit={code}")
        assert res.returncode == code, res.stderr
        assert res.stdout == f"hello {code}\n" and "from rt-0" in res.stderr
    script = cogo.root / "s.py"
    script.write_text("print('from a file')")
    res = cogo.run("exec", "rt", str(script), "exit=4")
    assert res.returncode == 4 and "print('from a file')" in res.stdout
    res = cogo.run("exec", "rt", "-c", "x", "sleep=10", "--timeout", "0.3")
    assert res.returncode == 124 and "TIMEOUT" in res.stderr
    res = cogo.run("exec", "nobody", "-c", "x")
    assert res.returncode == 125 and "NOT_FOUND" in res.stderr
    task = cogo.root / "task.json"
    task.write_text(json.dumps({"capability": "test", "action": "echo", "payload": {"k": "v"}}))
    res = cogo.run("exec", "rt", "--task", str(task), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["payload"]["echo"] == {"k": "v"}
    res = cogo.run("exec", "rt", "--task", str(task), "-c", "both")
    assert res.returncode == 2 and "exactly one of" in res.stderr


def test_ctrl_c_on_exec_cancels_on_the_worker(cogo):
    cogo.write_profile(profile())
    cogo.up()
    proc = subprocess.Popen([*CLI, "exec", "rt", "-c", "x", "sleep=30", "-p", str(cogo.profile_path)], env=cogo.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until(lambda: cogo.instance("rt-0")["active"] == 1 or cogo.instance("rt-0")["inflight"] == 1, what="running")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130
    wait_until(
        lambda: (w := cogo.instance("rt-0"))["inflight"] == 0 and w["tasks_failed"] == 1, what="cancelled on worker"
    )
    totals = json.loads(cogo.run("status", "--json").stdout)["balancer"]["totals"]
    assert totals["cancelled"] == 1


def test_websocket_task_stream_events_result_and_cancel(cogo):
    cogo.write_profile(profile())
    cogo.up()
    sock = str(cogo.state_dir / "cogoctl.sock")
    port = cogo.instance("rt-0")["port"]

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with unix_connect(sock, uri="ws://localhost/api/tasks/stream") as ws:
            await ws.send(json.dumps({"workerType": "rt", "task": {"action": "emit", "payload": {"n": 3}}}))
            first = [json.loads(await ws.recv()) for _ in range(5)]
        async with unix_connect(sock, uri="ws://localhost/api/tasks/stream") as ws:
            await ws.send(json.dumps({"workerType": "rt", "task": {"action": "sleep", "payload": {"s": 30}}}))
            accepted = json.loads(await ws.recv())
            await until_active(port, 1)  # running on the worker: the cancel must reach it there
            await ws.send(json.dumps({"type": "cancel"}))
            second = [accepted, json.loads(await ws.recv())]
        return first, second

    first, second = asyncio.run(scenario())
    assert [f["type"] for f in first] == ["accepted", "event", "event", "event", "result"]
    assert [f["data"] for f in first[1:4]] == ["line 0\n", "line 1\n", "line 2\n"]
    assert second[1]["type"] == "error" and second[1]["code"] == "CANCELLED"
    wait_until(lambda: cogo.instance("rt-0")["active"] == 0, what="worker idle")


def test_bad_execute_requests_get_4xx(cogo):
    cogo.write_profile(profile())
    cogo.up()
    c = client(cogo)
    for body, code in [
        ({"task": {"action": "echo"}}, "BAD_REQUEST"),  # no workerType or capability
        ({"workerType": "rt"}, "BAD_REQUEST"),  # no task
        ({"workerType": "rt", "task": {"action": "echo"}, "priority": "urgent"}, "BAD_REQUEST"),
        ({"workerType": "rt", "task": {"action": "echo"}, "timeout_s": -1}, "BAD_REQUEST"),
        ({"capability": "flying", "task": {"action": "x"}}, "UNSUPPORTED"),
        ({"workerType": "ghost", "task": {"action": "x"}}, "NOT_FOUND"),
        ({"capability": "test", "task": {"action": "nope"}}, "UNSUPPORTED"),
    ]:
        with pytest.raises(ApiError) as info:
            c.post("/api/workers/execute", body)
        assert info.value.code == code, (body, info.value)
        assert 400 <= info.value.status < 500
    assert c.post("/api/workers/execute", {"capability": "test", "task": {"action": "echo"}})["instance"] == "rt-0"
