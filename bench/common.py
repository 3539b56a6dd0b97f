"""Shared helpers for the benchmarks: medians, temp state dirs, polling /health, tool venvs."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.helpers import free_port, free_ports

__all__ = ["free_port", "free_ports"]  # re-exported for the benches

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
COGOCTL = [PY, "-m", "cogoctl"]
TOOLS_VENV = ROOT / "bench" / ".venv-tools"


def median_ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 1)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_health(port: int, timeout: float = 30.0, poll: float = 0.002) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if health_ok(port):
            return time.perf_counter() - t0
        time.sleep(poll)
    raise TimeoutError(f"port {port} never answered /health")


def wait_down(port: int, timeout: float = 10.0) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.001)


def tools_venv() -> Path:
    """A venv with supervisor and circus, installed by this script (not project dependencies)."""
    py = TOOLS_VENV / "bin" / "python"
    if not (TOOLS_VENV / "bin" / "supervisord").exists() or not (TOOLS_VENV / "bin" / "circusd").exists():
        subprocess.run([PY, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "supervisor", "circus"], check=True)
    return TOOLS_VENV / "bin"


class TempDir:
    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="cgb", dir="/tmp"))
        return self.path

    def __exit__(self, *a: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def cogo_env(state: Path) -> dict[str, str]:
    return dict(os.environ, COGO_STATE_DIR=str(state))


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
