"""Balancer core: queue order (priority, then age), bound, re-queue, strategies. Pure."""

from __future__ import annotations

import random

import pytest

from cogoctl.protocol import Priority, exit_status
from cogoctl.supervisor.balancer import Chooser, QueueFull, Slot, TaskQueue


def drain(q: TaskQueue) -> list[str]:
    out = []
    while (t := q.pop()) is not None:
        out.append(t)
    return out


def test_priority_then_age():
    q = TaskQueue(10)
    for tid, prio in [("l1", Priority.LOW), ("n1", Priority.NORMAL), ("h1", Priority.HIGH), ("n2", Priority.NORMAL),
                      ("h2", Priority.HIGH), ("l2", Priority.LOW)]:  # fmt: skip
        q.push(tid, prio)
    assert drain(q) == ["h1", "h2", "n1", "n2", "l1", "l2"]


def test_bound_and_force_and_remove():
    q = TaskQueue(2)
    q.push("a", Priority.NORMAL)
    seq_b = q.push("b", Priority.NORMAL)
    with pytest.raises(QueueFull):
        q.push("c", Priority.HIGH)
    assert q.remove("a") and not q.remove("a")
    assert len(q) == 1 and "b" in q and "a" not in q
    q.push("c", Priority.NORMAL)
    assert q.pop() == "b"
    # a re-queued task keeps its age (goes before younger tasks of its priority) and may exceed the bound
    q.push("d", Priority.NORMAL)
    q.push("b", Priority.NORMAL, seq=seq_b, force=True)
    assert len(q) == 3
    assert drain(q) == ["b", "c", "d"]


def test_peek_skips_removed():
    q = TaskQueue(5)
    q.push("a", Priority.HIGH)
    q.push("b", Priority.LOW)
    q.remove("a")
    assert q.peek() == "b" and q.pop() == "b" and q.pop() is None


def slots(*loads: int, cap: int = 2) -> list[Slot]:
    return [Slot(f"i{k}", load, cap) for k, load in enumerate(loads)]


def test_least_outstanding_picks_the_least_loaded_and_rotates_ties():
    c = Chooser("least-outstanding")
    assert c.choose(slots(2, 1, 0)).id == "i2"
    picks = {c.choose(slots(0, 0, 0)).id for _ in range(3)}
    assert picks == {"i0", "i1", "i2"}


def test_round_robin_cycles_and_skips_full():
    c = Chooser("round-robin")
    s = slots(0, 0, 0)
    assert [c.choose(s).id for _ in range(4)] == ["i0", "i1", "i2", "i0"]
    s = slots(0, 2, 0)  # i1 full
    assert [c.choose(s).id for _ in range(3)] == ["i2", "i0", "i2"]


def test_power_of_two_prefers_the_lighter_of_two():
    c = Chooser("power-of-two", random.Random(1))
    counts = {"i0": 0, "i1": 0}
    for _ in range(200):
        counts[c.choose(slots(0, 1, cap=5)).id] += 1
    assert counts == {"i0": 200, "i1": 0}  # with two candidates the lighter always wins
    assert c.choose(slots(5, 5, cap=5)) is None
    assert c.choose(slots(5, 1, cap=5)).id == "i1"


@pytest.mark.parametrize("strategy", ["least-outstanding", "round-robin", "power-of-two"])
def test_no_choice_when_all_full_or_empty(strategy):
    c = Chooser(strategy)
    assert c.choose(slots(2, 2)) is None
    assert c.choose([]) is None


def test_exit_status_pass_through():
    assert exit_status({"exit_code": 0}) == 0
    assert exit_status({"exit_code": 3}) == 3
    assert exit_status({"exit_code": 1, "signal": 9}) == 137
    assert exit_status({"exit_code": -15}) == 143
    assert exit_status({"exit_code": True}) == 0 and exit_status(None) == 0 and exit_status("x") == 0
