"""Running the bridge: one Listener per port_redirection entry, and the Directory behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from cogoctl.bridge.directory import Directory
from cogoctl.bridge.listener import Listener
from cogoctl.bridge.routes import routes
from cogoctl.profile import Profile


class Bridge:
    def __init__(self, profile: Profile, socket_path: str | None, on_change: Callable[[], None] | None = None) -> None:
        legacy = profile.legacy_support
        self.directory = Directory(socket_path)
        self.listeners = [
            Listener(r, legacy.host, self.directory, legacy.max_connections, legacy.idle_timeout, on_change)
            for r in routes(profile)
        ]
        self._directory_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind every listener (a port in use raises PortInUse, and nothing stays bound)."""
        await self.directory.refresh()
        self._directory_task = asyncio.create_task(self.directory.run())
        try:
            for listener in self.listeners:
                await listener.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()
        if self._directory_task is not None:
            self.directory.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await self._directory_task

    def stats(self) -> dict[str, Any]:
        """Flat counters for heartbeats and /metrics: `<port>.<counter>`."""
        out: dict[str, Any] = {}
        for listener in self.listeners:
            for key, value in listener.snapshot().items():
                if isinstance(value, int) and key not in ("legacy_port", "target"):
                    out[f"{listener.route.legacy_port}.{key}"] = value
        return out
