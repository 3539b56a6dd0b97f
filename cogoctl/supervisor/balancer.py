"""Load-balancing core: the bounded priority queue and the instance-choosing strategies. Pure.

No sockets, no clocks of its own (callers pass `now`), no asyncio: tested directly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cogoctl.protocol import Priority


class QueueFull(Exception):
    pass


@dataclass(order=True)
class _Entry:
    rank: int
    seq: int
    task_id: str = field(compare=False)


class TaskQueue:
    """Priority (high, normal, low) then age; bounded; O(log n) push/pop; lazy removal."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[_Entry] = []
        self._live: dict[str, _Entry] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def push(self, task_id: str, priority: Priority, seq: int | None = None, force: bool = False) -> int:
        """Queue a task; `seq` keeps a re-queued task's original age. `force` ignores the bound."""
        if not force and len(self._live) >= self.limit:
            raise QueueFull(f"queue full ({self.limit} tasks waiting)")
        entry = _Entry(priority.rank, seq if seq is not None else self.next_seq(), task_id)
        heapq.heappush(self._heap, entry)
        self._live[task_id] = entry
        return entry.seq

    def pop(self) -> str | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._live.get(entry.task_id) is entry:
                del self._live[entry.task_id]
                return entry.task_id
        return None

    def peek(self) -> str | None:
        while self._heap:
            entry = self._heap[0]
            if self._live.get(entry.task_id) is entry:
                return entry.task_id
            heapq.heappop(self._heap)
        return None

    def remove(self, task_id: str) -> bool:
        return self._live.pop(task_id, None) is not None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live


class Candidate(Protocol):
    """What a strategy needs to know of an instance."""

    @property
    def id(self) -> str: ...

    @property
    def inflight(self) -> int: ...

    @property
    def capacity(self) -> int: ...


@dataclass
class Slot:
    """A plain Candidate (tests, and the dispatcher's snapshot)."""

    id: str
    inflight: int
    capacity: int
    ref: Any = None


class Chooser:
    """One per worker type: remembers the round-robin position; owns its random source."""

    def __init__(self, strategy: str, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self._rr = 0
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        free = [c for c in candidates if c.inflight < c.capacity]
        if not free:
            return None
        if self.strategy == "round-robin":
            # the next in rotation with room, over the whole list so positions stay stable
            n = len(candidates)
            for k in range(n):
                c = candidates[(self._rr + k) % n]
                if c.inflight < c.capacity:
                    self._rr = (self._rr + k + 1) % n
                    return c
            return None
        if self.strategy == "power-of-two":
            if len(free) == 1:
                return free[0]
            a, b = self._rng.sample(free, 2)
            return a if a.inflight <= b.inflight else b
        # least outstanding; ties broken in rotation so equal instances share the work
        least = min(c.inflight for c in free)
        tied = [c for c in free if c.inflight == least]
        choice = tied[self._rr % len(tied)]
        self._rr += 1
        return choice
