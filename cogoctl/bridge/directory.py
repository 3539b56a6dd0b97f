"""Where each worker's RUNNING instances listen right now, as the supervisor knows it.

Refreshed from GET /api/workers/status on the control socket every `interval`, and at once
after a failed connect, so an instance that moved (restart, ephemeral port, scale) is followed.
Without a supervisor (`cogoctl bridge` on its own) it knows nothing and routes go to the
profile's fixed ports.
"""

from __future__ import annotations

import asyncio
import json
import logging

from cogoctl.aio import wait_event
from cogoctl.httpclient import ProbeError, http_request

log = logging.getLogger("cogoctl.bridge")


class Directory:
    def __init__(self, socket_path: str | None, interval: float = 0.5) -> None:
        self.socket_path = socket_path
        self.interval = interval
        self.ports: dict[str, list[int]] | None = None  # None: no supervisor answered (yet)
        self._wake = asyncio.Event()
        self._stopping = False

    def ports_of(self, worker: str) -> list[int] | None:
        return None if self.ports is None else self.ports.get(worker, [])

    def refresh_soon(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        if self.socket_path is None:
            return
        try:
            status, body, _ = await http_request(
                "GET", "localhost", 0, "/api/workers/status", 2.0, unix=self.socket_path
            )
        except (ProbeError, OSError):
            self.ports = None
            return
        if status != 200:
            return
        ports: dict[str, list[int]] = {}
        for w in json.loads(body)["workers"]:
            if w["state"] == "RUNNING" and w.get("port") and not w.get("draining"):
                ports.setdefault(w["name"], []).append(int(w["port"]))
        self.ports = ports

    async def run(self) -> None:
        while not self._stopping:
            await self.refresh()
            self._wake.clear()
            await wait_event(self._wake, self.interval)

    def stop(self) -> None:
        """Ends run() at its next turn (a flag, not only a cancel: see cogoctl/aio.py)."""
        self._stopping = True
        self._wake.set()
