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


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    yield
    deadline_procs = psutil.wait_procs(tagged_processes(), timeout=5)[1]
    left = [p for p in deadline_procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    desc = []
    for p in left:
        try:
            desc.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:
            pass
    assert not desc, "processes started by the test run are still alive:\n" + "\n".join(desc)
