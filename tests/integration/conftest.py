from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import kill_left_behind, tagged_processes
from tests.integration.helpers import Cogo


def _case_processes(tag: str) -> list[psutil.Process]:
    out = []
    for proc in tagged_processes():
        try:
            if proc.environ().get("CGTEST_CASE") == tag:
                out.append(proc)
        except psutil.Error:
            continue
    return out


@pytest.fixture
def cogo():
    # short path: AF_UNIX socket paths are limited to 107 bytes
    root = Path(tempfile.mkdtemp(prefix="cg", dir="/tmp"))
    tag = uuid.uuid4().hex[:10]
    c = Cogo(root, tag)
    yield c
    if c.foreground is not None and c.foreground.poll() is None:
        c.foreground.terminate()
        c.foreground.wait(30)
    if c.supervisor_pid() and psutil.pid_exists(c.supervisor_pid()):
        c.run("down", timeout=60)
    leaked = kill_left_behind(_case_processes(tag))
    shutil.rmtree(root, ignore_errors=True)
    assert not leaked, "test left processes behind:\n" + "\n".join(leaked)
