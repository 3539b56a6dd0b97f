"""Suite-wide guard: every process the tests start carries CGTEST_RUN in its environment; at
the end of the run none of them may be left (zombies count as gone: PID 1 here reaps slowly)."""

from __future__ import annotations

import os
import uuid

import psutil
import pytest

RUN_TAG = f"cgtest-{uuid.uuid4().hex[:12]}"
os.environ["CGTEST_RUN"] = RUN_TAG  # inherited by every cogoctl, supervisor and worker we start


def tagged_processes(tag: str = RUN_TAG) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("CGTEST_RUN") == tag:
            found.append(proc)
    return found


def kill_left_behind(procs: list[psutil.Process]) -> list[str]:
    """Give procs 5 s to go; kill and describe the ones still alive (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=5)
    desc = []
    for p in alive:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                desc.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()
        except psutil.Error:
            pass
    return desc


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    yield
    desc = kill_left_behind(tagged_processes())
    assert not desc, "processes started by the test run are still alive:\n" + "\n".join(desc)
