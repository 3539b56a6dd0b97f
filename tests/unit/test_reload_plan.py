"""The reload plan and watch ownership: pure."""

from __future__ import annotations

from cogoctl.profile import WorkerConfig, parse_profile
from cogoctl.supervisor.reload import Action, diff_keys, plan
from cogoctl.supervisor.watch import owners, split_entry

BASE = """
workers:
  keep:
    command: [sleep, "1"]
  change:
    command: [sleep, "1"]
    env: {LOG_LEVEL: info}
  gone:
    command: [sleep, "1"]
  scale:
    command: [sleep, "1"]
    instances: 1
  tune:
    command: [sleep, "1"]
    queue_limit: 10
"""


def p(text: str):
    return parse_profile(text, "/etc/p.yaml", {})


def test_plan_names_each_action_with_its_reason():
    new = BASE.replace("LOG_LEVEL: info", "LOG_LEVEL: debug").replace("  gone:", "  added:")
    new = new.replace("instances: 1", "instances: 3").replace("queue_limit: 10", "queue_limit: 50")
    steps = {s.worker: s for s in plan(p(BASE), p(new)).steps}
    assert steps["keep"].action is Action.KEEP and steps["keep"].reasons == []
    assert steps["change"].action is Action.RESTART and steps["change"].reasons == ["env.LOG_LEVEL changed"]
    assert steps["gone"].action is Action.STOP and steps["gone"].reasons == ["removed from the profile"]
    assert steps["added"].action is Action.START and steps["added"].instances == 1
    assert steps["scale"].action is Action.SCALE and steps["scale"].instances == 3  # instances alone: only scale
    assert steps["tune"].action is Action.UPDATE and steps["tune"].reasons == ["queue_limit changed"]


def test_disabling_stops_and_manager_socket_needs_down_up():
    new = BASE.replace("  gone:\n    command", "  gone:\n    enabled: false\n    command")
    new = "manager:\n  socket: /run/x.sock\n  metrics_interval: 5s\n" + new
    pl = plan(p(BASE), p(new))
    assert [s.reasons for s in pl.steps if s.worker == "gone"] == [["disabled"]]
    assert pl.needs_restart_of_supervisor == ["manager.socket"]
    assert pl.applied_live == ["manager.metrics_interval"]


def test_legacy_support_change_restarts_the_bridge():
    legacy = "legacy_support:\n  enabled: true\n  port_redirection: {4001: 4011}\n"
    old = p(BASE + legacy)
    new = p(BASE + legacy.replace("4011", "4012"))
    bridge = next(s for s in plan(old, new).steps if s.worker == "legacy-bridge")
    assert bridge.action is Action.RESTART and "legacy_support.port_redirection.4001 changed" in bridge.reasons


def test_diff_keys_nested():
    assert diff_keys({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 2, "d": 2}, "e": 0}) == ["b.c", "e"]
    assert diff_keys([1], [1, 2]) == [""]  # a changed list is one change of its key


def w(name: str, watch: tuple[str, ...], ignore: tuple[str, ...] = ()) -> WorkerConfig:
    return WorkerConfig(name=name, command=("x",), watch=watch, watch_ignore=ignore)


def test_owners_by_directory_glob_and_ignore():
    ws = [w("a", ("/src/a",)), w("b", ("/src/b/**/*.py",), ("*_test.py",)), w("c", ("/src",))]
    assert owners("/src/a/x.py", ws) == ["a", "c"]
    assert owners("/src/b/pkg/y.py", ws) == ["b", "c"]
    assert owners("/src/b/pkg/y_test.py", ws) == ["c"]
    assert owners("/src/b/pkg/y.txt", ws) == ["c"]
    assert owners("/srcx/a.py", ws) == []  # a prefix of the name is not the directory
    assert split_entry("/a/b/**/*.py") == ("/a/b", "/a/b/**/*.py")
    assert split_entry("/a/b") == ("/a/b", None)
