"""The event log: every state change with its reason, in events.jsonl and to live followers."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

from cogoctl.supervisor.logs import RotatingLog, utc_stamp


class EventLog:
    def __init__(self, path: Path, max_size: int, backups: int, keep: int = 2000) -> None:
        self._log = RotatingLog(path, max_size, backups)
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.fanout = self._log.fanout

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        event = {"ts": utc_stamp(now), "time": round(now, 3), "kind": kind, **fields}
        self.recent.append(event)
        self._log.write(json.dumps(event, separators=(",", ":"), default=str))
        return event

    def tail(self, n: int) -> list[dict[str, Any]]:
        if n <= len(self.recent):
            return list(self.recent)[-n:] if n else []
        out = []
        for line in self._log.tail(n):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        self._log.close()
