"""Worker runtime + health monitor with real processes: hung workers are caught, not only dead ones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.helpers import get_unix, until_active, wait_until

pytestmark = pytest.mark.timeout(90)


def rt_profile(extra: str = "", instances: int = 1, interval: str = "200ms") -> str:
    return f"""
manager:
  metrics_interval: 200ms
workers:
  rt:
    command: [python, {{W}}/rt_worker.py]
    runtime: true
    port: 0
    instances: {instances}
    heartbeat_interval: {interval}
    heartbeat_misses: 3
    hang_kill_timeout: 500ms
    health_check: {{interval: 300ms, timeout: 1s, failures: 2}}
{extra}
"""


def replaced(cogo, iid: str, old_pid: int) -> dict:
    return wait_until(
        lambda: (w := cogo.instance(iid))["state"] == "RUNNING" and w["pid"] != old_pid and w,
        timeout=20, what=f"{iid} replaced",
    )  # fmt: skip


def unhealthy_reason(cogo, iid: str) -> list[str]:
    return [e["reason"] for e in cogo.events() if e.get("instance") == iid and e.get("new") == "UNHEALTHY"]


async def _task(port: int, token: str | None, action: str, payload: dict | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(f"ws://127.0.0.1:{port}/", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "task", "id": "t1", "capability": "test", "action": action,
                                  "payload": payload or {}}))  # fmt: skip
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("result", "error"):
                return frame


def task(cogo, action: str, payload: dict | None = None, iid: str = "rt-0") -> dict:
    port = cogo.instance(iid)["port"]
    token = (cogo.state_dir / "worker.token").read_text().strip()
    return asyncio.run(_task(port, token, action, payload))


def test_blocked_event_loop_is_caught_and_replaced(cogo):
    cogo.write_profile(rt_profile())
    cogo.up()
    w = cogo.wait_state("rt-0", "RUNNING")
    t0 = time.monotonic()
    os.kill(w["pid"], signal.SIGUSR1)  # its handler calls time.sleep(3600) in the loop's thread
    new = replaced(cogo, "rt-0", w["pid"])
    assert time.monotonic() - t0 < 15
    reasons = unhealthy_reason(cogo, "rt-0")
    assert reasons and reasons[0].startswith("heartbeat missed 3x"), reasons
    assert ("UNHEALTHY", "STOPPING") in cogo.transitions("rt-0")
    assert not psutil.pid_exists(w["pid"]) or psutil.Process(w["pid"]).status() == psutil.STATUS_ZOMBIE
    assert new["restarts"] == 1


def test_sigstopped_worker_is_caught_and_replaced(cogo):
    cogo.write_profile(rt_profile())
    cogo.up()
    w = cogo.wait_state("rt-0", "RUNNING")
    os.kill(w["pid"], signal.SIGSTOP)
    replaced(cogo, "rt-0", w["pid"])
    assert unhealthy_reason(cogo, "rt-0")[0].startswith("heartbeat missed")


def test_health_500_is_restarted(cogo):
    cogo.write_profile(rt_profile(interval="5s"))
    cogo.up()
    w = cogo.wait_state("rt-0", "RUNNING")
    assert task(cogo, "set_health", {"status": 500})["payload"] == {"health": 500}
    replaced(cogo, "rt-0", w["pid"])
    reasons = unhealthy_reason(cogo, "rt-0")
    assert reasons and "/health failing: HTTP 500" in reasons[0], reasons
    restart = [e["reason"] for e in cogo.events() if e.get("instance") == "rt-0" and e.get("new") == "BACKOFF"]
    assert "/health failed 2x in a row" in restart[0]


def test_memory_hog_over_limit_is_restarted_with_reason(cogo):
    cogo.write_profile(rt_profile("    limits: {memory: 120MB, window: 400ms}", interval="5s"))
    cogo.up()
    w = cogo.wait_state("rt-0", "RUNNING")
    assert task(cogo, "hog", {"mb": 200})["type"] == "result"
    replaced(cogo, "rt-0", w["pid"])
    reasons = unhealthy_reason(cogo, "rt-0")
    assert reasons and reasons[0].startswith("rss ") and "> 120 MB for 400ms" in reasons[0], reasons


def test_runtime_workers_exit_when_the_supervisor_dies(cogo):
    """The documented choice: workers exit (PDEATHSIG); `up` again starts fresh ones."""
    cogo.write_profile(rt_profile(instances=2))
    cogo.up()
    pids = [w["pid"] for w in cogo.status()]
    os.kill(cogo.supervisor_pid(), signal.SIGKILL)
    gone = lambda p: not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE  # noqa: E731
    wait_until(lambda: all(gone(p) for p in pids), timeout=10, what="workers exit")
    cogo.up()
    assert all(w["state"] == "RUNNING" for w in cogo.status())


def test_malformed_frames_close_the_link_and_the_supervisor_stays_up(cogo):
    out = cogo.root / "bad.json"
    cogo.write_profile(f"""
workers:
  bad:
    command: [python, {{W}}/bad_link.py]
    runtime: true
    env: {{MODE: malformed, OUT: "{out}"}}
    heartbeat_interval: 30s
  rt:
    command: [python, {{W}}/rt_worker.py]
    runtime: true
""")
    cogo.up()
    result = wait_until(lambda: out.exists() and json.loads(out.read_text()), what="bad_link result")
    assert result["closed"] is True and result["code"] == 1008
    closed = [
        e for e in cogo.events() if e["kind"] == "link" and e.get("action") == "closed" and e["instance"] == "bad-0"
    ]
    assert closed and closed[0]["reason"].startswith("malformed frame: frame is not JSON")
    assert cogo.instance("rt-0")["state"] == "RUNNING"
    assert cogo.run("status").returncode == 0


def test_unknown_protocol_version_is_refused_naming_supported_ones(cogo):
    out = cogo.root / "bad.json"
    cogo.write_profile(f"""
workers:
  bad:
    command: [python, {{W}}/bad_link.py]
    runtime: true
    env: {{MODE: version, OUT: "{out}"}}
    restart: {{policy: on-failure, start_limit: 1}}
""")
    res = cogo.run("up", "-d")
    assert res.returncode == 1
    answer = json.loads(out.read_text())
    assert answer["type"] == "error" and answer["code"] == "UNSUPPORTED" and "speaks 1" in answer["message"]
    refused = [e for e in cogo.events() if e["kind"] == "link" and e.get("action") == "refused"]
    assert refused and "protocol version 99" in refused[0]["reason"]


def test_public_port_needs_the_worker_token_and_health_does_not(cogo):
    cogo.write_profile(rt_profile(interval="5s"))
    cogo.up()
    port = cogo.instance("rt-0")["port"]
    with pytest.raises(InvalidStatus) as info:
        asyncio.run(_task(port, None, "echo"))
    assert info.value.response.status_code == 401
    answer = task(cogo, "echo", {"x": 1})
    assert answer["type"] == "result" and answer["payload"]["echo"] == {"x": 1}
    import urllib.request

    body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    assert body["status"] == "ok" and body["instance"] == "rt-0" and body["linked"] is True


def test_graceful_drain_finishes_in_flight_tasks(cogo):
    cogo.write_profile(rt_profile(interval="5s"))
    cogo.up()
    port = cogo.instance("rt-0")["port"]
    token = (cogo.state_dir / "worker.token").read_text().strip()

    async def scenario() -> dict:
        client = asyncio.create_task(_task(port, token, "sleep", {"s": 1.0}))
        await until_active(port, 1)  # the task is running before the stop is asked for
        stop = asyncio.create_task(asyncio.to_thread(cogo.run, "stop", "rt"))
        result = await client
        res = await stop
        assert res.returncode == 0, res.stderr
        return result

    result = asyncio.run(scenario())
    assert result["type"] == "result" and result["payload"]["slept"] == 1.0
    w = cogo.instance("rt-0")
    assert w["state"] == "STOPPED" and w["exit_code"] == 0


def test_hooks_metrics_health_and_top(cogo):
    hook_out = cogo.root / "hook.log"
    cogo.write_profile(rt_profile(
        "  crashy:\n    command: [python, {W}/exit_now.py]\n    restart: {backoff_initial: 10ms, start_limit: 2}\n",
        interval="300ms",
    ).replace("manager:\n", f"manager:\n  hooks:\n    command: [sh, -c, 'echo $COGO_HOOK_STATE $COGO_HOOK_INSTANCE >> {hook_out}']\n"))  # fmt: skip
    assert cogo.run("up", "-d").returncode == 1  # crashy goes FATAL: up -d fails...
    cogo.write_profile(rt_profile(interval="300ms").replace(
        "manager:\n", f"manager:\n  hooks:\n    command: [sh, -c, 'echo $COGO_HOOK_STATE $COGO_HOOK_INSTANCE >> {hook_out}']\n"))  # fmt: skip
    assert "FATAL crashy-0" in hook_out.read_text()  # ...and the FATAL hook ran
    cogo.up()
    w = cogo.wait_state("rt-0", "RUNNING")
    os.kill(w["pid"], signal.SIGSTOP)
    replaced(cogo, "rt-0", w["pid"])
    wait_until(lambda: "UNHEALTHY rt-0" in hook_out.read_text(), what="UNHEALTHY hook")
    wait_until(lambda: cogo.instance("rt-0")["last_heartbeat_age_s"] is not None, what="heartbeats")
    status, ctype, text = get_unix(cogo, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    for name in ("cogo_service_status", "cogo_response_time_ms", "cogo_active_connections", "cogo_task_queue_size",
                 "cogo_error_count_total", "cogo_memory_usage_mb", "cogo_cpu_usage_percent", "cogo_restarts_total",
                 "cogo_last_heartbeat_age_seconds"):  # fmt: skip
        assert f"\n{name}{{" in text, name
    assert 'cogo_service_status{instance="rt-0",state="RUNNING",worker="rt"} 1.0' in text
    assert 'cogo_restarts_total{instance="rt-0",worker="rt"} 1.0' in text
    res = cogo.run("health", "rt")
    assert res.returncode == 0 and "heartbeats" in res.stdout and '"status": "ok"' in res.stdout, res.stdout
    data = json.loads(cogo.run("health", "rt", "--json").stdout)
    assert data["instances"][0]["health"]["instance"] == "rt-0"
    res = cogo.run("top", "-n", "1")
    assert res.returncode == 0 and "rt-0" in res.stdout and "HB AGE" in res.stdout
