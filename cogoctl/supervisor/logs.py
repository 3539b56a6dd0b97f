"""Size-rotated, line-timestamped log files with live followers.

Rotation is the standard library's RotatingFileHandler (name, name.1, ... name.N); each line is
``<UTC ISO time> <stream> <text>``. Followers (``logs -f``) get lines from an in-memory fan-out,
so following costs no polling of the file.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cogoctl.profile import SECRET_RE

_TAIL_BLOCK = 64 * 1024


def utc_stamp(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Fanout:
    """Bounded per-subscriber queues; a subscriber that cannot keep up is dropped, never blocks."""

    def __init__(self, maxsize: int = 10000) -> None:
        self._subs: set[asyncio.Queue[object]] = set()
        self._maxsize = maxsize

    def subscribe(self) -> asyncio.Queue[object]:
        q: asyncio.Queue[object] = asyncio.Queue(self._maxsize)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[object]) -> None:
        self._subs.discard(q)

    def publish(self, item: object) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(item)
            except asyncio.QueueFull:
                # too slow a follower: end its stream (None) rather than grow without bound
                self._subs.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._subs.clear()


class RotatingLog:
    """One log file (name, name.1 .. name.backups) of text lines."""

    def __init__(self, path: Path, max_size: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # delay=False: open now, so a bad state dir fails at start, not at the first line
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_size, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self.fanout = Fanout()

    def write(self, line: str) -> None:
        record = logging.LogRecord("cogoctl", logging.INFO, "", 0, line, None, None)
        self._handler.emit(record)
        self.fanout.publish(line)

    def tail(self, n: int) -> list[str]:
        return tail_lines(self.path, n, self._handler.backupCount)

    def close(self) -> None:
        self.fanout.close()
        self._handler.close()


def tail_lines(path: Path, n: int, backups: int = 0) -> list[str]:
    """The last n lines over path, path.1, ... (newest last)."""
    if n <= 0:
        return []
    out: list[str] = []
    files = [path] + [Path(f"{path}.{i}") for i in range(1, backups + 1)]
    for file in files:
        if len(out) >= n:
            break
        lines = list(_reverse_lines(file, n - len(out)))
        out = lines[::-1] + out
    return out[-n:]


def _reverse_lines(path: Path, limit: int) -> Iterator[str]:
    try:
        fh = open(path, "rb")
    except OSError:
        return
    with fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        rest = b""
        count = 0
        while pos > 0 and count < limit:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines.pop(0)
            for line in reversed(lines):
                if line == b"" and count == 0:
                    continue  # the trailing newline
                yield line.decode("utf-8", "replace")
                count += 1
                if count >= limit:
                    return
        if rest and count < limit:
            yield rest.decode("utf-8", "replace")


def mask_secrets(text: str, secrets: list[str]) -> str:
    """Replace the values of secret-looking env entries wherever they would be printed."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def secret_values(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if SECRET_RE.search(k) and v]
