"""A worker's identity and settings, read from the environment the supervisor gives it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Settings:
    worker: str
    instance: str
    port: int | None  # None: no public port; 0: bind an ephemeral one and report it
    socket: str | None  # the supervisor's control socket; None: run standalone
    link_token: str | None
    worker_token: str | None
    public: str = "token"  # "open": the public port needs no token
    heartbeat_interval: float = 30.0
    max_concurrency: int = 4
    health_path: str = "/health"
    stop_grace: float = 8.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, default_name: str, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        port = env.get("COGO_PORT")
        name = env.get("COGO_WORKER", default_name)
        return cls(
            worker=name,
            instance=env.get("COGO_INSTANCE", f"{name}-0"),
            port=int(port) if port not in (None, "") else None,
            socket=env.get("COGO_SOCKET") or None,
            link_token=env.get("COGO_LINK_TOKEN") or None,
            worker_token=env.get("COGO_WORKER_TOKEN") or None,
            public=env.get("COGO_PUBLIC", "token"),
            heartbeat_interval=float(env.get("COGO_HEARTBEAT_INTERVAL", "30")),
            max_concurrency=int(env.get("COGO_MAX_CONCURRENCY", "4")),
            health_path=env.get("COGO_HEALTH_PATH", "/health"),
            stop_grace=float(env.get("COGO_STOP_GRACE", "8")),
            options=json.loads(env.get("COGO_OPTIONS", "{}") or "{}"),
        )
