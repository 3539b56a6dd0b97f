"""Worker instance states, the transition table, and the restart/backoff policy. Pure.

STOPPED -> STARTING -> RUNNING <-> UNHEALTHY -> STOPPING -> STOPPED
failures: -> BACKOFF -> STARTING, or FATAL once the start limit is hit; EXITED when the
restart policy says not to restart.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field

from cogoctl.profile import RestartConfig


class State(enum.StrEnum):
    STOPPED = "STOPPED"  # never started, or stopped on request
    STARTING = "STARTING"  # spawned; waiting for hello and /health (or for nothing, plain commands)
    RUNNING = "RUNNING"  # ready: registered and healthy; gets tasks
    UNHEALTHY = "UNHEALTHY"  # alive but failing heartbeats/probes/limits; gets no new tasks
    STOPPING = "STOPPING"  # stop signal sent, waiting for exit
    BACKOFF = "BACKOFF"  # exited or failed to start; waiting to start again
    EXITED = "EXITED"  # exited and the restart policy says to leave it
    FATAL = "FATAL"  # start limit hit; only `cogoctl start` brings it back


ALIVE = frozenset({State.STARTING, State.RUNNING, State.UNHEALTHY, State.STOPPING})  # has a process
DOWN = frozenset({State.STOPPED, State.EXITED, State.FATAL})  # no process, nothing scheduled
SERVING = frozenset({State.RUNNING})  # may receive tasks

TRANSITIONS: dict[State, frozenset[State]] = {
    # a stopped instance can only be started
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset(
        {
            State.RUNNING,  # registered and healthy (or plain command spawned)
            State.BACKOFF,  # exited, or start_timeout passed; will retry
            State.FATAL,  # exited and the start limit is hit
            State.EXITED,  # exited and the policy says not to restart
            State.STOPPING,  # stop requested, or start_timeout passed (kill it)
        }
    ),
    State.RUNNING: frozenset(
        {
            State.UNHEALTHY,  # heartbeats missed, probe failing, limit exceeded
            State.STOPPING,  # stop/restart requested, or being replaced
            State.BACKOFF,  # crashed; restart follows
            State.FATAL,  # crashed and the start limit is hit
            State.EXITED,  # exited and the policy says not to restart
        }
    ),
    State.UNHEALTHY: frozenset(
        {
            State.RUNNING,  # recovered before the monitor acted
            State.STOPPING,  # the monitor restarts it, or stop requested
            State.BACKOFF,
            State.FATAL,
            State.EXITED,
        }
    ),
    State.STOPPING: frozenset(
        {
            State.STOPPED,  # stopped on request
            State.BACKOFF,  # stopped by the monitor (hung, unhealthy): restart after backoff
            State.FATAL,  # stopped by the monitor and the start limit is hit
            State.EXITED,  # killed for not starting in time, and the policy says not to restart
        }
    ),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.FATAL}),
    State.EXITED: frozenset({State.STARTING, State.STOPPED}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}


class TransitionError(RuntimeError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"illegal transition {old.value} -> {new.value}")


def should_restart(policy: str, exit_code: int | None, requested: bool) -> bool:
    """Whether an exit leads to a restart. `requested`: the supervisor itself stopped it to restart."""
    if requested:
        return True
    if policy == "always":
        return True
    if policy == "on-failure":
        return exit_code != 0
    return False


@dataclass
class RestartTracker:
    """Start limit and backoff for one instance.

    The first restart after a stable run is immediate; from the second consecutive failure the
    delay grows exponentially (with +-20 % jitter) up to backoff_max. A run that lasted
    `stable_after` resets the count. `start_limit` starts within `start_window` -> FATAL.
    """

    config: RestartConfig
    starts: deque[float] = field(default_factory=deque)
    consecutive_failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def record_start(self, now: float) -> None:
        self.starts.append(now)
        while self.starts and self.starts[0] < now - self.config.start_window:
            self.starts.popleft()

    def limit_reached(self, now: float) -> bool:
        recent = [t for t in self.starts if t >= now - self.config.start_window]
        return len(recent) >= self.config.start_limit

    def record_exit(self, ran_for: float) -> None:
        if ran_for >= self.config.stable_after:
            self.consecutive_failures = 1
        else:
            self.consecutive_failures += 1

    def next_delay(self) -> float:
        if self.consecutive_failures <= 1:
            return 0.0
        base = self.config.backoff_initial * (2 ** (self.consecutive_failures - 2))
        delay = min(base, self.config.backoff_max)
        return max(0.0, min(self.config.backoff_max, delay * self.rng.uniform(0.8, 1.2)))

    def reset(self) -> None:
        """`cogoctl start` on a FATAL instance: a clean slate."""
        self.starts.clear()
        self.consecutive_failures = 0
