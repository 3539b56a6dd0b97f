"""python-sandbox with real processes: every hostile run is contained and the worker stays healthy."""

from __future__ import annotations

import base64
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from cogoctl.client import Client
from cogoctl.errors import ApiError
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.timeout(120)
UID_BASE = 63000  # the tests' own range, to find what a run left behind


def profile(instances: int = 1, **options: object) -> str:
    opts = {"warm_pool": 2, "timeout_s": 5, "memory_mb": 256, "uid_base": UID_BASE, **options}
    return f"""
workers:
  python-sandbox:
    command: [python, -m, workers.python_sandbox]
    runtime: true
    port: 0
    instances: {instances}
    max_concurrency: 8
    heartbeat_interval: 2s
    options: {json.dumps(opts)}
"""


def execute(cogo, action: str, payload: dict, capability: str = "python-execution", timeout: float = 30) -> dict:
    client = Client(str(cogo.state_dir / "cogoctl.sock"), timeout=60)
    body = {"workerType": "python-sandbox", "capability": capability, "task": {"action": action, "payload": payload},
            "timeout_s": timeout}  # fmt: skip
    return client.post("/api/workers/execute", body)


def run(cogo, code: str, **payload: object) -> dict:
    return execute(cogo, "run", {"code": code, **payload})


def left_behind() -> list[int]:
    return [p.pid for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] and UID_BASE <= p.info["uids"].real < UID_BASE + 2000
            and p.info["status"] != psutil.STATUS_ZOMBIE and p.info["status"] != psutil.STATUS_STOPPED
            and not _warm(p)]  # fmt: skip


def _warm(p: psutil.Process) -> bool:
    """Interpreters waiting for code (the pool) or holding a session are expected; the bootstrap
    names itself sandbox-warm / sandbox-session (a run, and what it forks, is sandbox-run)."""
    try:
        return p.name() in ("sandbox-warm", "sandbox-session")
    except psutil.Error:
        return True


@pytest.fixture
def sandbox(cogo):
    cogo.write_profile(profile())
    cogo.up()
    return cogo


def healthy(cogo) -> None:
    assert run(cogo, "print(6 * 7)")["result"]["exit_code"] == 0
    assert cogo.instance("python-sandbox-0")["state"] == "RUNNING"


def test_health_reports_what_is_enforced(sandbox):
    data = json.loads(sandbox.run("health", "python-sandbox", "--json").stdout)
    report = data["instances"][0]["health"]["sandbox"]
    assert report["network_isolation"] is True and report["uid_isolation"] is True and report["problems"] == []


def test_infinite_loop_times_out_and_the_group_is_killed(sandbox):
    with pytest.raises(ApiError) as info:
        execute(sandbox, "run", {"code": "import os\nos.fork()\nwhile True: pass"}, timeout=2)
    assert info.value.code == "TIMEOUT"
    wait_until(lambda: not left_behind(), timeout=10, what="nothing left running")
    healthy(sandbox)


def test_fork_bomb_is_refused_by_the_process_limit(sandbox):
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('refused after', n, e.errno)\n")  # fmt: skip
    ans = run(sandbox, code, timeout=3)
    assert "refused after" in "".join(e["data"] for e in ans["events"] if e["event"] == "stdout")
    wait_until(lambda: not left_behind(), timeout=10, what="fork bomb cleaned up")
    healthy(sandbox)


def test_allocating_4gb_is_killed_for_memory(sandbox):
    ans = run(sandbox, "x = bytearray(4 * 1024 ** 3)")
    assert ans["result"]["killed"] == "memory" and ans["result"]["exit_code"] == 1
    healthy(sandbox)


def test_writing_1gb_is_stopped_by_the_size_limit(sandbox):
    code = "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 1024 * 1024)\n"
    ans = run(sandbox, code)
    assert ans["result"]["killed"] == "file_size", ans["result"]
    assert all(f["size"] <= 64 * 1024 * 1024 for f in ans["result"]["files"])
    healthy(sandbox)


def test_secrets_and_network_are_out_of_reach(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    code = f"""
import os, socket
try:
    open('/etc/shadow').read(); print('shadow: READ')
except PermissionError: print('shadow: denied')
try:
    open('/proc/%d/environ' % os.getppid()).read(); print('worker env: READ')
except PermissionError: print('worker env: denied')
print('my env:', sorted(k for k in os.environ if 'TOKEN' in k or 'COGO' in k))
try:
    socket.create_connection(('127.0.0.1', {port}), 2); print('network: CONNECTED')
except OSError as e: print('network: failed', e.errno)
"""
    out = "".join(e["data"] for e in run(sandbox, code)["events"] if e["event"] == "stdout")
    listener.close()
    assert "shadow: denied" in out and "worker env: denied" in out and "my env: []" in out, out
    assert "network: failed" in out and not accepted, out


def test_file_operations_refuse_escapes(sandbox):
    def fo(action: str, **payload: object) -> dict:
        return execute(sandbox, action, {"session": "s1", **payload}, capability="file-operations")

    assert fo("write", path="notes/a.txt", content=base64.b64encode(b"hello").decode())["result"]["size"] == 5
    assert base64.b64decode(fo("read", path="notes/a.txt")["result"]["content"]) == b"hello"
    assert [f["name"] for f in fo("list")["result"]["files"]] == ["notes/a.txt"]
    for bad in ("../../etc/passwd", "/etc/passwd", "notes/../../x"):
        with pytest.raises(ApiError) as info:
            fo("read", path=bad)
        assert info.value.code == "BAD_REQUEST", bad
    # a symlink the code plants to leave the workspace
    run(sandbox, "import os; os.symlink('/etc', 'out'); os.symlink('/etc/passwd', 'pw')", session="s1")
    for bad in ("out/passwd", "pw"):
        with pytest.raises(ApiError) as info:
            fo("read", path=bad)
        assert info.value.code == "BAD_REQUEST" and "leaves the workspace" in str(info.value), bad
    with pytest.raises(ApiError):
        fo("write", path="out/evil", content=base64.b64encode(b"x").decode())
    assert fo("delete", path="notes/a.txt")["result"]["deleted"] == "notes/a.txt"


def test_session_keeps_variables_and_loses_them_when_idle(cogo):
    cogo.write_profile(profile(session_idle_s=1))
    cogo.up()
    run(cogo, "x = 41", session="nb")
    ans = run(cogo, "print(x + 1)", session="nb")
    assert "".join(e["data"] for e in ans["events"] if e["event"] == "stdout") == "42\n"
    wait_until(lambda: json.loads(cogo.run("health", "python-sandbox", "--json").stdout)["instances"][0]["health"]
               ["sandbox"]["sessions"] == 0, what="idle session ended")  # fmt: skip
    ans = run(cogo, "print(x)", session="nb")
    assert ans["result"]["exit_code"] == 1
    assert "NameError" in "".join(e["data"] for e in ans["events"] if e["event"] == "stderr")


def test_package_install_is_refused_unless_allowed(sandbox):
    with pytest.raises(ApiError) as info:
        execute(sandbox, "install", {"session": "s", "packages": ["six"]}, capability="package-install")
    assert info.value.code == "UNSUPPORTED" and "allow_package_install" in str(info.value)


def test_twenty_concurrent_runs_across_two_instances(cogo):
    cogo.write_profile(profile(instances=2))
    cogo.up()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: run(cogo, f"import time; time.sleep(0.2); print({i})"), range(20)))
    bad = [a for a in answers if not a["events"]]
    assert not bad, bad[:2]
    assert sorted(int(a["events"][0]["data"]) for a in answers) == list(range(20))
    assert {a["instance"] for a in answers} == {"python-sandbox-0", "python-sandbox-1"}


def test_exec_streams_and_exits_with_the_script_code(sandbox):
    for code in (0, 1, 3):
        script = sandbox.root / f"s{code}.py"
        script.write_text(f"import sys\nprint('out', sys.argv[1:])\nprint('err', file=sys.stderr)\nsys.exit({code})\n")
        res = sandbox.run("exec", "python-sandbox", str(script), "a", "b")
        assert res.returncode == code, res.stderr
        assert res.stdout == "out ['a', 'b']\n" and "err" in res.stderr


def test_package_install_into_a_session_when_allowed(cogo):
    """pip runs (with network, for that step only) into the session's own directory."""
    cogo.write_profile(profile(allow_package_install=True, package_allow=["six"]))
    cogo.up()
    with pytest.raises(ApiError) as info:
        execute(cogo, "install", {"session": "p", "packages": ["requests"]}, capability="package-install")
    assert info.value.code == "BAD_REQUEST" and "allow-list" in str(info.value)
    ans = execute(cogo, "install", {"session": "p", "packages": ["six"]}, capability="package-install", timeout=120)
    assert ans["result"]["installed"] == ["six"]
    out = run(cogo, "import six; print(six.__name__)", session="p")
    assert "".join(e["data"] for e in out["events"] if e["event"] == "stdout") == "six\n"
    other = run(cogo, "import six")  # not in a fresh run's environment, nor the worker's
    assert other["result"]["exit_code"] == 1
