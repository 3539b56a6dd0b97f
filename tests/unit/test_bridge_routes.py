from __future__ import annotations

from cogoctl.bridge.routes import Picker, Route, routes
from cogoctl.profile import BRIDGE_WORKER, parse_profile


def test_routes_follow_the_worker_that_owns_the_target_port():
    p = parse_profile(
        "workers:\n  sandbox:\n    command: [x]\n    port: 4011\n"
        "legacy_support:\n  enabled: true\n  port_redirection: {4002: 4099, 4001: 4011}\n",
        "/p.yaml",
        {},
    )
    assert routes(p) == [Route(4001, 4011, "sandbox"), Route(4002, 4099, None)]
    assert p.workers[BRIDGE_WORKER].runtime and p.workers[BRIDGE_WORKER].command[-1] == "/p.yaml"


def test_no_bridge_worker_when_disabled():
    p = parse_profile("legacy_support:\n  enabled: false\n  port_redirection: {4001: 4011}\n", "/p.yaml", {})
    assert BRIDGE_WORKER not in p.workers


def test_picker_round_robin_and_follows_changes():
    pk = Picker()
    assert [pk.pick([5001, 5002]) for _ in range(4)] == [5001, 5002, 5001, 5002]
    assert pk.pick([]) is None
    assert pk.pick([6001]) == 6001
    picks = {pk.pick([7001, 7002, 7003]) for _ in range(3)}
    assert picks == {7001, 7002, 7003}
