"""psutil sampling of each instance and its descendants: cpu %, rss, threads, fds, children."""

from __future__ import annotations

import psutil

_MB = 1024 * 1024


class ProcessSampler:
    """Keeps psutil.Process objects between samples (cpu_percent needs the previous reading)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int, extra_pids: list[int]) -> dict[str, float | int]:
        """Sum over the instance's process and its descendants (extra_pids: from its cgroup)."""
        pids = {pid, *extra_pids}
        if not extra_pids:
            try:
                pids.update(c.pid for c in self._get(pid).children(recursive=True))
            except psutil.Error:
                pass
        cpu = rss = threads = fds = 0.0
        seen: set[int] = set()
        for p in pids:
            try:
                proc = self._get(p)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    fds += proc.num_fds()
                seen.add(p)
            except psutil.Error:
                self._procs.pop(p, None)
        return {
            "cpu_percent": round(cpu, 1),
            "rss_mb": round(rss / _MB, 1),
            "threads": int(threads),
            "fds": int(fds),
            "children": max(0, len(seen) - (1 if pid in seen else 0)),
        }

    def _get(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = psutil.Process(pid)
            proc.cpu_percent(None)  # first call primes the counter
            self._procs[pid] = proc
        return proc

    def forget_except(self, live: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
