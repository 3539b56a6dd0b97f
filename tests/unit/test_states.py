"""The transition table and the restart policy, without processes or clocks."""

from __future__ import annotations

import random

import pytest

from cogoctl.profile import RestartConfig
from cogoctl.supervisor.states import (
    TRANSITIONS,
    RestartTracker,
    State,
    TransitionError,
    check_transition,
    should_restart,
)


def test_every_state_has_a_row_and_design_edges_exist():
    assert set(TRANSITIONS) == set(State)
    for old, new in [
        (State.STOPPED, State.STARTING),
        (State.STARTING, State.RUNNING),
        (State.RUNNING, State.UNHEALTHY),
        (State.UNHEALTHY, State.RUNNING),
        (State.UNHEALTHY, State.STOPPING),
        (State.STOPPING, State.STOPPED),
        (State.RUNNING, State.BACKOFF),
        (State.BACKOFF, State.STARTING),
        (State.BACKOFF, State.FATAL),
        (State.FATAL, State.STARTING),
    ]:
        check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (State.STOPPED, State.RUNNING),  # must start first
        (State.FATAL, State.RUNNING),
        (State.STOPPED, State.FATAL),
        (State.RUNNING, State.STARTING),  # must stop first
        (State.EXITED, State.RUNNING),
        (State.STOPPING, State.RUNNING),
    ],
)
def test_illegal_transitions_raise(old, new):
    with pytest.raises(TransitionError):
        check_transition(old, new)


def test_restart_policies():
    assert should_restart("always", 0, False)
    assert should_restart("on-failure", 1, False) and not should_restart("on-failure", 0, False)
    assert should_restart("on-failure", -9, False)
    assert not should_restart("never", 1, False)
    assert should_restart("never", 1, True)  # the supervisor's own restart (health) always restarts


def tracker(**kw) -> RestartTracker:
    return RestartTracker(RestartConfig(**kw), rng=random.Random(7))


def test_first_restart_immediate_then_exponential_with_jitter_capped():
    t = tracker(backoff_initial=0.5, backoff_max=4.0, stable_after=10)
    delays = []
    for _ in range(7):
        t.record_exit(ran_for=0.1)
        delays.append(t.next_delay())
    assert delays[0] == 0.0
    for i, d in enumerate(delays[1:5]):
        base = 0.5 * 2**i
        assert base * 0.8 <= d <= min(4.0, base * 1.2)
    assert all(d <= 4.0 for d in delays)
    assert delays[-1] >= 4.0 * 0.8


def test_stable_run_resets_backoff():
    t = tracker(backoff_initial=1.0, stable_after=10)
    for _ in range(4):
        t.record_exit(ran_for=0.1)
    assert t.next_delay() > 1.0
    t.record_exit(ran_for=60)
    assert t.next_delay() == 0.0


def test_start_limit_window():
    t = tracker(start_limit=3, start_window=60)
    for now in (0.0, 1.0):
        t.record_start(now)
    assert not t.limit_reached(2.0)
    t.record_start(2.0)
    assert t.limit_reached(2.0)
    assert not t.limit_reached(61.5)  # the first two fell out of the window
    t.reset()
    assert not t.limit_reached(3.0) and t.next_delay() == 0.0
