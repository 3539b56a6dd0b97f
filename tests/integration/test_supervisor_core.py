"""The supervisor core with real processes: lifecycle, restarts, stop, orphans, CLI, API."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import psutil
import pytest

from tests.integration.helpers import CLI, WORKERS, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def plain_http_profile(port: int, extra: str = "") -> str:
    return f"""
workers:
  web:
    command: [python, {{W}}/plain_http.py]
    port: {port}
    health_check: {{path: /health, interval: 5s, timeout: 1s}}
{extra}
"""


def test_sigkill_worker_is_replaced_by_a_new_running_pid(cogo):
    cogo.write_profile(plain_http_profile(free_port()))
    cogo.up()
    first = cogo.wait_state("web-0", "RUNNING")
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_until(
        lambda: (w := cogo.instance("web-0"))["state"] == "RUNNING" and w["pid"] != first["pid"] and w,
        what="a new RUNNING pid",
    )
    assert second["restarts"] == 1
    assert ("RUNNING", "BACKOFF") in cogo.transitions("web-0")
    reasons = [e["reason"] for e in cogo.events() if e.get("new") == "BACKOFF"]
    assert any("SIGKILL" in r for r in reasons), reasons


def test_worker_that_exits_at_once_goes_backoff_then_fatal(cogo):
    cogo.write_profile(
        """
workers:
  ok:
    command: [sleep, "300"]
  crashy:
    command: [python, {W}/exit_now.py]
    env: {EXIT_CODE: "3"}
    restart: {backoff_initial: 50ms, backoff_max: 200ms, start_limit: 3, start_window: 30s}
"""
    )
    res = cogo.run("up", "-d")
    assert res.returncode == 1
    assert "crashy" in res.stderr and "exit code 3" in res.stderr, res.stderr
    assert "cannot open the database" in res.stderr  # its last log lines
    states = [new for _, new in cogo.transitions("crashy-0")]
    assert states.count("STARTING") == 3
    assert "BACKOFF" in states and states[-1] in ("FATAL", "STOPPED")
    assert "FATAL" in states
    # up -d failed: nothing is left running (the fixture also checks every process is gone)
    assert cogo.run("status").returncode == 3


def test_start_clears_fatal_and_on_failure_policy_leaves_clean_exit(cogo):
    cogo.write_profile(
        """
workers:
  crashy:
    command: [python, {W}/exit_now.py]
    restart: {backoff_initial: 10ms, start_limit: 2}
  once:
    command: [python, {W}/exit_now.py]
    env: {EXIT_CODE: "0"}
    restart: {policy: on-failure}
  keep:
    command: [sleep, "300"]
"""
    )
    cogo.foreground = subprocess.Popen([*CLI, "up", "-p", str(cogo.profile_path)], env=cogo.env, text=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: cogo.supervisor_pid(), what="supervisor")
    fatal = cogo.wait_state("crashy-0", "FATAL")
    assert "start limit" in fatal["reason"]
    once = cogo.wait_state("once-0", "EXITED")
    assert once["exit_code"] == 0 and "on-failure" in once["reason"]
    before = len([t for t in cogo.transitions("crashy-0") if t[1] == "STARTING"])
    res = cogo.run("start", "crashy")
    assert res.returncode == 1  # it fails again, and says so
    after = len([t for t in cogo.transitions("crashy-0") if t[1] == "STARTING"])
    assert after >= before + 1
    assert ("FATAL", "STARTING") in cogo.transitions("crashy-0")


def test_worker_ignoring_sigterm_is_killed_after_stop_timeout(cogo):
    cogo.write_profile(plain_http_profile(free_port(), "    env: {IGNORE_TERM: '1'}\n    stop_timeout: 700ms"))
    cogo.up()
    pid = cogo.wait_state("web-0", "RUNNING")["pid"]
    t0 = time.monotonic()
    res = cogo.run("stop", "web")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert elapsed >= 0.7
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    kills = [e for e in cogo.events() if e["kind"] == "kill"]
    assert kills and "SIGTERM" in kills[0]["reason"]
    assert cogo.instance("web-0")["state"] == "STOPPED"


def test_grandchildren_even_setsid_ones_are_gone_after_stop(cogo):
    pidfile = cogo.root / "forker.pids"
    cogo.write_profile(f"""
workers:
  forker:
    command: [python, {{W}}/forker.py, {pidfile}]
""")
    cogo.up()
    wait_until(lambda: pidfile.exists() and (pidfile.parent / "forker.pids.escaped").exists(), what="forks")
    main, child = map(int, pidfile.read_text().split())
    escaped = int((pidfile.parent / "forker.pids.escaped").read_text())
    assert psutil.Process(escaped).ppid() != main  # really reparented away
    assert cogo.run("stop", "forker").returncode == 0

    def gone(pid: int) -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    wait_until(lambda: all(gone(p) for p in (main, child, escaped)), timeout=5, what="all forks gone")


def test_supervisor_sigkill_workers_exit_and_next_up_cleans_leftovers(cogo):
    """Documented recovery: workers get SIGTERM via PDEATHSIG and exit at once; what escaped
    (setsid'ed grandchildren) is killed by the next `up` from the dead supervisor's cgroups."""
    pidfile = cogo.root / "forker.pids"
    cogo.write_profile(f"""
workers:
  forker:
    command: [python, {{W}}/forker.py, {pidfile}]
  web:
    command: [python, {{W}}/plain_http.py]
    port: {free_port()}
""")
    cogo.up()
    wait_until(lambda: (cogo.root / "forker.pids.escaped").exists(), what="forks")
    web_pid = cogo.wait_state("web-0", "RUNNING")["pid"]
    main, _child = map(int, pidfile.read_text().split())
    escaped = int((cogo.root / "forker.pids.escaped").read_text())
    sup = cogo.supervisor_pid()
    os.kill(sup, signal.SIGKILL)

    def gone(pid: int) -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    wait_until(lambda: gone(web_pid) and gone(main), timeout=5, what="workers exit after supervisor death")
    assert not gone(escaped)  # a setsid'ed, reparented grandchild survives the supervisor...
    pidfile.unlink()
    cogo.up()  # ...until the next supervisor on this state dir starts
    wait_until(lambda: gone(escaped), timeout=5, what="leftover killed by next up")
    cleanup = [e for e in cogo.events() if e["kind"] == "cleanup" and "previous supervisor" in e.get("reason", "")]
    assert cleanup and escaped in cleanup[0]["killed"]


def test_second_up_on_same_state_dir_refuses(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n")
    cogo.up()
    res = cogo.run("up", "-d")
    assert res.returncode == 1
    assert "already running" in res.stderr and str(cogo.state_dir) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_stale_socket_and_pid_file_are_cleaned(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n")
    cogo.up()
    os.kill(cogo.supervisor_pid(), signal.SIGKILL)
    wait_until(lambda: cogo.run("status").returncode == 3, what="no supervisor")
    assert (cogo.state_dir / "cogoctl.sock").exists() and (cogo.state_dir / "cogoctl.pid").exists()
    cogo.up()
    assert cogo.wait_state("s-0", "RUNNING")


def test_no_supervisor_means_exit_3_for_every_command(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n")
    for args in (["status"], ["stop", "s"], ["start", "s"], ["restart", "s"], ["logs", "s"], ["events"], ["down"]):
        res = cogo.run(*args)
        assert res.returncode == 3, (args, res.stderr)
        assert "no supervisor is running" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_up_d_failing_start_timeout_names_worker_and_leaves_nothing(cogo):
    cogo.write_profile(f"""
workers:
  slow:
    command: [python, {{W}}/plain_http.py]
    port: {free_port()}
    env: {{START_DELAY: "30"}}
    start_timeout: 600ms
    stop_timeout: 500ms
    restart: {{start_limit: 1}}
""")
    res = cogo.run("up", "-d")
    assert res.returncode == 1
    assert "slow" in res.stderr and "start_timeout" in res.stderr, res.stderr
    assert cogo.run("status").returncode == 3


def test_tcp_api_requires_the_token(cogo):
    port = free_port()
    cogo.write_profile(f"""
manager:
  api: {{enabled: true, port: {port}}}
workers:
  s:
    command: [sleep, "300"]
""")
    cogo.up()
    import http.client

    def get(headers: dict[str, str]) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/workers/status", headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    status, body = get({})
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    status, _ = get({"Authorization": "Bearer wrong"})
    assert status == 401
    token_file = cogo.state_dir / "api.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    status, body = get({"Authorization": f"Bearer {token_file.read_text().strip()}"})
    assert status == 200 and body["workers"][0]["instance"] == "s-0"


def test_control_socket_is_0600_and_bad_requests_get_4xx(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n")
    cogo.up()
    sock_path = cogo.state_dir / "cogoctl.sock"
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600

    def raw(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    assert raw(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert raw(b"POST /api/workers/nobody/restart HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 404"
    )
    assert raw(b"GET /api/events?n=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"DELETE /api/workers/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    big = b"POST /api/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n" + b"x" * 1000
    with socket.socket(socket.AF_UNIX) as s:  # a lying Content-Length, then hang up
        s.connect(str(sock_path))
        s.sendall(big)
    assert cogo.instance("s-0")["state"] == "RUNNING"  # the daemon is still there
    openapi = json.loads(
        raw(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").split(b"\r\n\r\n", 1)[1]
    )
    assert "/api/workers/status" in openapi["paths"]


def test_status_json_logs_events_and_depends_on_order(cogo):
    port = free_port()
    cogo.write_profile(f"""
workers:
  web:
    command: [python, {{W}}/plain_http.py]
    port: {port}
    depends_on: [base]
  base:
    command: [sleep, "300"]
""")
    cogo.up()
    workers = cogo.status()
    required = {
        "name",
        "instance",
        "state",
        "pid",
        "port",
        "restarts",
        "uptime_s",
        "cpu_percent",
        "rss_mb",
        "exit_code",
        "reason",
    }
    assert all(required <= set(w) for w in workers)
    assert [w["instance"] for w in workers] == ["base-0", "web-0"]  # dependencies first
    running = [e["instance"] for e in cogo.events() if e.get("new") == "RUNNING"]
    assert running.index("base-0") < running.index("web-0")
    started = [e["instance"] for e in cogo.events() if e.get("new") == "STARTING"]
    assert started.index("web-0") > running.index("base-0") - 1
    # psutil metrics arrive
    w = wait_until(lambda: (w := cogo.instance("web-0"))["rss_mb"] and w, what="metrics")
    assert w["rss_mb"] > 1 and w["threads"] >= 1
    res = cogo.run("logs", "web", "-n", "5")
    assert res.returncode == 0 and "out listening on" in res.stdout and "err stderr line" in res.stdout
    assert res.stdout.split(" | ", 1)[1][:4].isdigit()  # timestamped lines
    res = cogo.run("events", "-n", "100")
    assert "web-0: STARTING -> RUNNING" in res.stdout
    # shutdown runs in reverse start order
    assert cogo.run("down").returncode == 0
    stopped = [e["instance"] for e in cogo.events() if e.get("new") == "STOPPED"]
    assert stopped == ["web-0", "base-0"]


def test_logs_follow_streams_new_lines(cogo):
    cogo.write_profile(
        "workers:\n  ticker:\n    command: [python, -u, -c, 'import time\n\nfor i in range(10**6): print(\"tick\", i); time.sleep(0.05)']\n"
    )
    cogo.up()
    proc = subprocess.Popen([*CLI, "logs", "ticker", "-f", "-n", "1", "-p", str(cogo.profile_path)], env=cogo.env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
        assert numbers == sorted(numbers) and numbers[-1] > numbers[0]
    finally:
        proc.terminate()
        proc.wait(10)


def test_secrets_are_masked_in_logs_events_and_config(cogo):
    secret = "s3cr3t-value-xyz"
    cogo.write_profile(f"""
workers:
  web:
    command: [python, {{W}}/plain_http.py]
    port: {free_port()}
    env: {{API_TOKEN: "{secret}", PRINT_SECRET: "1"}}
""")
    cogo.up()
    wait_until(lambda: "my secret is" in cogo.run("logs", "web").stdout, what="secret line")
    logs = cogo.run("logs", "web").stdout
    assert secret not in logs and "my secret is ***" in logs
    assert secret not in (cogo.state_dir / "events.jsonl").read_text()
    assert secret not in cogo.run("config").stdout
    assert secret not in cogo.run("status", "--json").stdout


def test_log_files_rotate_by_size(cogo):
    cogo.write_profile(
        'workers:\n  chatty:\n    command: [python, -c, \'print("x" * 200 + "\\n", end="", flush=True) or [print("y" * 100, flush=True) for _ in range(2000)] and __import__("time").sleep(300)\']\n'
        "    logs: {max_size: 20KB, backups: 2}\n"
    )
    cogo.up()
    logs = cogo.state_dir / "logs"
    wait_until(lambda: (logs / "chatty-0.log.2").exists(), what="two rotated files")
    assert not (logs / "chatty-0.log.3").exists()
    assert all(p.stat().st_size <= 21 * 1024 for p in logs.glob("chatty-0.log*"))


def test_foreground_up_stops_everything_on_sigterm_and_exits_0(cogo):
    cogo.write_profile("""
workers:
  a:
    command: [sleep, "300"]
  b:
    command: [sleep, "300"]
    depends_on: [a]
""")
    proc = subprocess.Popen([*CLI, "up", "-p", str(cogo.profile_path)], env=cogo.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    cogo.foreground = proc
    wait_until(lambda: cogo.supervisor_pid() and cogo.instance("b-0")["state"] == "RUNNING", what="b running")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "all workers stopped" in out
    stopped = [e["instance"] for e in cogo.events() if e.get("new") == "STOPPED"]
    assert stopped == ["b-0", "a-0"]


def test_restart_and_stop_start_all_from_cli(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n    instances: 2\n")
    cogo.up()
    pids = {w["instance"]: w["pid"] for w in cogo.status()}
    res = cogo.run("restart", "s")
    assert res.returncode == 0, res.stderr
    new = {w["instance"]: w["pid"] for w in cogo.status()}
    assert all(new[i] != pids[i] for i in pids) and all(w["state"] == "RUNNING" for w in cogo.status())
    assert cogo.run("stop", "all").returncode == 0
    assert {w["state"] for w in cogo.status()} == {"STOPPED"}
    assert cogo.run("start", "s-1").returncode == 0
    assert cogo.instance("s-1")["state"] == "RUNNING" and cogo.instance("s-0")["state"] == "STOPPED"
    res = cogo.run("restart", "nobody")
    assert res.returncode == 2 and "no worker or instance named 'nobody'" in res.stderr


def test_bad_profile_fails_before_anything_starts(cogo):
    cogo.write_profile("workers:\n  s:\n    command: [sleep, '300']\n    stop_timeout: soon\n")
    res = cogo.run("up", "-d")
    assert res.returncode == 2
    assert f"{cogo.profile_path}:4: workers.s.stop_timeout" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert cogo.supervisor_pid() is None


def test_config_prints_effective_profile_with_env_overrides(cogo):
    res = cogo.run("config", "-p", "prod", "--json", env={"WORKER_PYTHON_PORT": "4011", "BROWSER_MAX_INSTANCES": "9"})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["workers"]["python-sandbox"]["port"] == 4011
    assert data["workers"]["browser-worker"]["options"]["client_config"]["max_instances"] == 9
    assert data["workers"]["python-sandbox"]["health_check"]["interval"] == 15.0
    res = cogo.run("config", "-p", "dev", env={"WORKER_HEALTH_CHECK_INTERVAL": "45s"})
    assert "interval: 45.0" in res.stdout


def test_cli_status_does_not_import_daemon_servers_typer_or_rich():
    code = (
        "import sys\n"
        "sys.argv = ['cogoctl', 'status', '--json']\n"
        "from cogoctl.cli.main import main\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.startswith(('cogoctl.supervisor', 'playwright', 'h11', 'wsproto', 'websockets', 'aiohttp', 'asyncio', 'typer', 'rich', 'yaml'))]\n"
        "print(bad)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, COGO_STATE_DIR="/tmp/cg-nonexistent-state"))  # fmt: skip
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
    assert WORKERS.is_dir()
