"""The legacy bridge with real processes: a supervised legacy-bridge worker relaying legacy ports to
a TCP worker."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.helpers import CLI, WORKERS, free_ports, get_unix, wait_until

pytestmark = pytest.mark.timeout(120)


def bridge_profile(cogo, mode: str = "echo", instances: int = 1, extra: str = "", out: str = "") -> tuple[int, int]:
    legacy, target = free_ports(2)
    cogo.write_profile(f"""
defaults:
  heartbeat_interval: 300ms  # the bridge's counters ride on its heartbeats
workers:
  echo:
    command: [python, {{W}}/tcp_echo.py]
    port: {target}
    instances: {instances}
    env: {{MODE: {mode}, OUT: "{out}"}}
    health_check: null
    min_uptime: 200ms
legacy_support:
  enabled: true
  port_redirection: {{{legacy}: {target}}}
{extra}
""")
    return legacy, target


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def roundtrip(port: int, payload: bytes) -> bytes:
    """Send everything, half-close, read until EOF (both directions at once: no deadlock)."""
    s = connect(port)
    got = bytearray()

    def reader() -> None:
        while chunk := s.recv(1 << 16):
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    t.join(60)
    s.close()
    return bytes(got)


def bridge_ready(cogo, legacy: int) -> None:
    cogo.wait_state("legacy-bridge-0", "RUNNING")
    wait_until(lambda: _answers(legacy), what="bridge listening")


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def metrics(cogo) -> str:
    return get_unix(cogo, "/metrics")[2]


def stat(cogo, legacy: int, name: str) -> float:
    key = f'stat="{legacy}.{name}"'
    for line in metrics(cogo).splitlines():
        if line.startswith("cogo_worker_stat{") and key in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def echo_bridge(cogo):
    legacy, _target = bridge_profile(cogo)
    cogo.up()
    bridge_ready(cogo, legacy)
    return cogo, legacy


def test_payloads_arrive_byte_for_byte(echo_bridge):
    cogo, legacy = echo_bridge
    rng = random.Random(7)
    for size in (1, 1000, 3 * 65536 + 7, 8 * 1024 * 1024):
        payload = rng.randbytes(size)
        assert roundtrip(legacy, payload) == payload

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(min_size=0, max_size=200_000))
    def prop(payload: bytes) -> None:
        assert roundtrip(legacy, payload) == payload

    prop()
    wait_until(lambda: stat(cogo, legacy, "bytes_up") >= 8 * 1024 * 1024, what="counters in /metrics")


def test_half_close_is_propagated_both_ways(cogo):
    out = cogo.root / "received.txt"
    legacy, _ = bridge_profile(cogo, mode="halfclose", out=str(out))
    cogo.up()
    bridge_ready(cogo, legacy)
    s = connect(legacy)
    assert s.recv(100) == b"HELLO"
    assert s.recv(100) == b""  # the worker shut its write side: we see EOF...
    s.sendall(b"still talking")  # ...and can still send
    s.shutdown(socket.SHUT_WR)  # our half-close reaches the worker as EOF
    wait_until(lambda: out.exists() and b"still talking" in out.read_bytes(), what="worker got it")
    s.close()


def test_client_half_close_then_answer(echo_bridge):
    _, legacy = echo_bridge
    s = connect(legacy)
    s.sendall(b"ping")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := s.recv(100):
        got += chunk
    assert got == b"ping"


def test_200_concurrent_connections(echo_bridge):
    _, legacy = echo_bridge
    socks = [connect(legacy) for _ in range(200)]
    for i, s in enumerate(socks):
        s.sendall(f"conn {i}|".encode())
    for i, s in enumerate(socks):
        want = f"conn {i}|".encode()
        got = b""
        while len(got) < len(want):
            got += s.recv(100)
        assert got == want
    for s in socks:
        s.close()


def test_slow_reader_keeps_bridge_memory_bounded(echo_bridge):
    cogo, legacy = echo_bridge
    bridge = psutil.Process(cogo.instance("legacy-bridge-0")["pid"])
    before = bridge.memory_info().rss
    s = connect(legacy)
    s.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 200 * 1024 * 1024:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)  # we never read: the echo backs up into the bridge, then into us
    grown = (bridge.memory_info().rss - before) / 1048576
    s.close()
    assert sent < 100 * 1024 * 1024  # back-pressure stopped us long before
    assert grown < 16, f"bridge grew {grown:.1f} MB"


def test_restarted_target_is_followed_and_round_robin(cogo):
    legacy, _ = bridge_profile(cogo, mode="pid", instances=2)
    cogo.up()
    bridge_ready(cogo, legacy)

    def pid_via_bridge() -> int:
        with connect(legacy) as s:
            return int(s.recv(100).split(b"\n")[0])

    pids = {w["pid"] for w in cogo.status() if w["name"] == "echo"}
    seen = {pid_via_bridge() for _ in range(6)}
    assert seen == pids  # round robin over both RUNNING instances
    assert cogo.run("restart", "echo").returncode == 0
    new = {w["pid"] for w in cogo.status() if w["name"] == "echo"}
    assert not new & pids
    wait_until(lambda: {pid_via_bridge() for _ in range(6)} == new, what="new instances reached")


def test_target_down_closes_at_once_and_is_counted(echo_bridge):
    cogo, legacy = echo_bridge
    assert cogo.run("stop", "echo").returncode == 0
    t0 = time.monotonic()
    with connect(legacy) as s:
        s.settimeout(5)
        assert s.recv(100) == b""
    assert time.monotonic() - t0 < 3
    assert cogo.instance("legacy-bridge-0")["state"] == "RUNNING"  # the listener stays up
    wait_until(lambda: stat(cogo, legacy, "unreachable") >= 1, what="counted")


def test_connection_limit_refuses_at_once(cogo):
    legacy, _ = bridge_profile(cogo, extra="  max_connections: 3")
    cogo.up()
    bridge_ready(cogo, legacy)

    def held_connection() -> socket.socket | None:
        s = connect(legacy)
        s.sendall(b"x")
        if s.recv(10) == b"x":
            return s
        s.close()  # refused: an earlier probe connection was still being closed by the bridge
        return None

    held = [wait_until(held_connection, what="a relayed connection") for _ in range(3)]
    with connect(legacy) as extra:  # a fourth, while three are open
        extra.settimeout(5)
        assert extra.recv(10) == b""  # refused: closed at once
    wait_until(lambda: stat(cogo, legacy, "refused") >= 1, what="refusal counted")
    for s in held:
        s.close()


def test_bridge_killed_under_up_is_restarted(echo_bridge):
    cogo, legacy = echo_bridge
    old = cogo.instance("legacy-bridge-0")["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(
        lambda: (w := cogo.instance("legacy-bridge-0"))["state"] == "RUNNING" and w["pid"] != old, what="new bridge"
    )
    wait_until(lambda: _answers(legacy), what="listening again")
    assert roundtrip(legacy, b"after restart") == b"after restart"


def test_legacy_port_in_use_is_one_clear_line(cogo):
    legacy, _ = bridge_profile(cogo)
    holder = socket.socket()
    holder.bind(("127.0.0.1", legacy))
    holder.listen(1)
    try:
        res = subprocess.run([*CLI, "bridge", "-p", str(cogo.profile_path)], env=cogo.env, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert res.returncode == 2, res.stderr
        line = res.stderr.strip()
        assert "\n" not in line and f"legacy port {legacy}" in line and f"pid {os.getpid()}" in line, line
        res = subprocess.run([*CLI, "bridge", "--check", "-p", str(cogo.profile_path)], env=cogo.env,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert res.returncode == 1 and f"held by pid {os.getpid()}" in res.stdout, res.stdout
    finally:
        holder.close()


def test_foreground_bridge_relays_and_stops_on_sigterm(cogo):
    legacy, target = bridge_profile(cogo)
    # the target without a supervisor: the bridge falls back to the profile's port
    echo = subprocess.Popen([CLI[0], str(WORKERS / "tcp_echo.py")], env={**cogo.env, "PORT": str(target)},
                            stdout=subprocess.DEVNULL)  # fmt: skip
    proc = subprocess.Popen([*CLI, "bridge", "-p", str(cogo.profile_path)], env=cogo.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: _answers(legacy) and _answers(target), what="bridge and target")
        assert roundtrip(legacy, b"hello bridge") == b"hello bridge"
        res = subprocess.run([*CLI, "bridge", "--check", "-p", str(cogo.profile_path)], env=cogo.env,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert res.returncode == 0 and "held by the cogoctl bridge" in res.stdout and "answers" in res.stdout, (
            res.stdout
        )
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert not _answers(legacy)
        assert json.loads(err.splitlines()[0])["event"] == "listener up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        echo.kill()
        echo.wait()
