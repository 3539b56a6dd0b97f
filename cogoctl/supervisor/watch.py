"""Watching workers' code in development: a change restarts the worker that owns the path, and
only that worker (rolling when it has several instances), once per burst of changes."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from cogoctl.profile import WorkerConfig

log = logging.getLogger("cogoctl.watch")
_GLOB = set("*?[")


def split_entry(entry: str) -> tuple[str, str | None]:
    """`/a/b/**/*.py` -> (`/a/b`, the pattern); a plain path -> (path, None)."""
    parts = Path(entry).parts
    for i, part in enumerate(parts):
        if _GLOB & set(part):
            return str(Path(*parts[:i])) if i else "/", entry
    return entry, None


def owners(changed: str, workers: list[WorkerConfig]) -> list[str]:
    """The workers whose `watch` covers `changed` and whose `watch_ignore` does not. Pure."""
    out = []
    name = os.path.basename(changed)
    for w in workers:
        if any(fnmatch.fnmatch(changed, g) or fnmatch.fnmatch(name, g) for g in w.watch_ignore):
            continue
        for entry in w.watch:
            base, pattern = split_entry(entry)
            inside = changed == base or changed.startswith(base.rstrip("/") + "/")
            if inside and (pattern is None or fnmatch.fnmatch(changed, pattern)):
                out.append(w.name)
                break
    return out


class Watcher:
    def __init__(
        self,
        workers: Callable[[], list[WorkerConfig]],
        ignore_dirs: list[str],
        debounce: float,
        restart: Callable[[str, list[str]], Awaitable[None]],
    ) -> None:
        self.workers = workers
        self.ignore_dirs = [os.path.realpath(p) for p in ignore_dirs]
        self.debounce = debounce
        self.restart = restart
        self.on_failure: Callable[[str], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def roots(self) -> list[str]:
        roots = {split_entry(e)[0] for w in self.workers() for e in w.watch}
        return sorted(r for r in roots if os.path.exists(r))

    def start(self) -> None:
        self.stop()
        roots = self.roots()
        if roots:
            self._task = asyncio.create_task(self._run(roots), name="watch")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A watcher that dies must say so (it would otherwise just stop restarting anything)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("watching stopped: %r", task.exception())
            if self.on_failure is not None:
                self.on_failure(f"{type(task.exception()).__name__}: {task.exception()}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, roots: list[str]) -> None:
        from watchfiles import DefaultFilter, awatch  # imported only when watching

        class Filter(DefaultFilter):  # .git, __pycache__, *.pyc, editors' files ... plus the state dir
            def __call__(inner, change, path: str) -> bool:
                real = os.path.realpath(path)
                if any(real == d or real.startswith(d + "/") for d in self.ignore_dirs):
                    return False
                return super().__call__(change, path)

        stop = asyncio.Event()
        async for changes in awatch(*roots, watch_filter=Filter(), debounce=int(self.debounce * 1000), step=50,
                                    stop_event=stop, recursive=True):  # fmt: skip
            per_worker: dict[str, list[str]] = {}
            for _change, path in changes:
                for name in owners(os.path.realpath(path), self.workers()):
                    per_worker.setdefault(name, []).append(path)
            for name, paths in per_worker.items():
                try:
                    await self.restart(name, sorted(set(paths)))
                except Exception:
                    log.exception("restart of %s after a change failed", name)
