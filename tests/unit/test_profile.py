"""Profile parsing: good profiles, env substitution, and bad profiles naming file, line and key."""

from __future__ import annotations

import sys

import pytest

from cogoctl.errors import ProfileError, UsageError
from cogoctl.profile import load_profile, parse_profile, start_order

F = "/etc/cogo/test.yaml"


def parse(text: str, env: dict[str, str] | None = None):
    return parse_profile(text, F, env or {})


GOOD = """\
manager:
  api: {enabled: true, port: 3010}
defaults:
  stop_timeout: 5s
  restart: {policy: on-failure, backoff_initial: 100ms}
  env: {SHARED: "1"}
workers:
  b:
    command: [python, -m, b]
    depends_on: [a]
    port: 4001
    env: {OWN: yes}
  a:
    command: "sleep 10"
    restart: {start_limit: 2}
    limits: {memory: 512MB, cpu: 90%}
    logs: {max_size: 1MB}
"""


def test_good_profile_defaults_merge_and_order():
    p = parse(GOOD)
    a, b = p.workers["a"], p.workers["b"]
    assert list(p.workers) == ["a", "b"]  # dependencies first
    assert b.command[0] == sys.executable  # `python` is the interpreter cogoctl runs under
    assert a.command == ("sleep", "10")
    assert a.stop_timeout == 5.0 and a.restart.policy == "on-failure" and a.restart.start_limit == 2
    assert a.restart.backoff_initial == 0.1
    assert b.env == {"SHARED": "1", "OWN": "true"}
    assert a.limits.memory == 512 * 1024 * 1024 and a.limits.cpu == 90.0
    assert a.logs.max_size == 1024 * 1024 and a.logs.backups == 5
    assert p.manager.api.enabled and p.manager.api.port == 3010
    assert a.cwd == "/etc/cogo"  # relative paths resolve against the profile's directory


def test_env_substitution_types_plain_scalars():
    text = "workers:\n  w:\n    command: [x]\n    port: ${P:-3011}\n    stop_timeout: ${T:-2s}\n"
    assert parse(text).workers["w"].port == 3011
    p = parse(text, {"P": "4000", "T": "500ms"})
    assert p.workers["w"].port == 4000 and p.workers["w"].stop_timeout == 0.5


def test_packaged_profiles_carry_the_original_design_settings():
    for name, interval, browsers in (("dev", 30.0, 2), ("prod", 15.0, 5)):
        p = load_profile(name, environ={})
        shipped = ["python-sandbox", "figma-mcp", "browser-worker"]
        assert list(p.workers) == [*shipped, "legacy-bridge"]  # the bridge: legacy_support is enabled
        assert [p.workers[w].port for w in shipped] == [3011, 3012, 3013]
        assert p.manager.api.port == 3010
        assert all(w.heartbeat_interval == 30.0 for w in p.workers.values())
        assert all(p.workers[w].health_check and p.workers[w].health_check.path == "/health" for w in shipped)
        assert p.workers["python-sandbox"].health_check.interval == interval
        assert p.workers["browser-worker"].options["client_config"]["max_instances"] == browsers
        assert p.workers["figma-mcp"].capabilities == ("figma-design", "ui-generation", "asset-export")
        assert p.legacy_support.port_redirection == {3001: 3011, 3002: 3012}
        assert p.legacy_support.message_translation is True


def test_packaged_profile_env_overrides():
    env = {"WORKER_PYTHON_PORT": "5011", "WORKER_FIGMA_PORT": "5012", "WORKER_BROWSER_PORT": "5013",
           "WORKER_HEALTH_CHECK_INTERVAL": "20", "BROWSER_MAX_INSTANCES": "3"}  # fmt: skip
    p = load_profile("prod", environ=env)
    assert [p.workers[w].port for w in ("python-sandbox", "figma-mcp", "browser-worker")] == [5011, 5012, 5013]
    assert p.workers["figma-mcp"].health_check.interval == 20.0
    assert p.workers["browser-worker"].options["client_config"]["max_instances"] == 3


def test_profile_name_resolution():
    with pytest.raises(UsageError, match="no packaged profile"):
        load_profile("staging")
    with pytest.raises(ProfileError, match="file not found"):
        load_profile("/nonexistent/p.yaml")


BAD = [
    # (text, line, key, message part)
    ("workers:\n  w:\n    command: [x]\n    colour: red\n", 4, "workers.w.colour", "unknown key"),
    ("workers:\n  w:\n    command: [x]\n    port: eighty\n", 4, "workers.w.port", "integer from 0 to 65535"),
    ("workers:\n  w:\n    command: [x]\n    port: 70000\n", 4, "workers.w.port", "integer from 0 to 65535"),
    ("workers:\n  w:\n    command: [x]\n    stop_timeout: 3 days\n", 4, "workers.w.stop_timeout", "duration"),
    ("workers:\n  w:\n    command: []\n", 3, "workers.w.command", "non-empty list"),
    ("workers:\n  w:\n    port: 3000\n", 2, "workers.w", "missing required key 'command'"),
    (
        "workers:\n  a:\n    command: [x]\n    port: 4000\n  b:\n    command: [x]\n    port: 4000\n",
        7,
        "workers.b.port",
        "already used by workers.a.port",
    ),
    (
        "workers:\n  a:\n    command: [x]\n    depends_on: [ghost]\n",
        4,
        "workers.a.depends_on[0]",
        "unknown worker 'ghost'",
    ),
    (
        "workers:\n  a:\n    command: [x]\n    depends_on: [b]\n  b:\n    command: [x]\n    depends_on: [a]\n",
        7,
        "workers.b.depends_on",
        "dependency cycle: a -> b -> a",
    ),
    (
        "workers:\n  a:\n    command: [x]\n    restart: {policy: sometimes}\n",
        4,
        "workers.a.restart.policy",
        "always, on-failure, never",
    ),
    ("workers:\n  a:\n    command: [x]\n  a:\n    command: [y]\n", 4, "workers.a", "duplicate key"),
    ("workers:\n  a:\n    command: [x\n", 4, "", "YAML syntax error"),
    ("workers:\n  a:\n    command: [x]\n    limits: {memory: lots}\n", 4, "workers.a.limits.memory", "size"),
    ("workers:\n  a:\n    command: [x]\n    stop_signal: SIGNOPE\n", 4, "workers.a.stop_signal", "signal name"),
    ("workers:\n  Bad Name:\n    command: [x]\n", 2, "workers.Bad Name", "lower-case"),
    ("defaults:\n  stop_timeout: forever\nworkers:\n  a:\n    command: [x]\n", 2, "defaults.stop_timeout", "duration"),
    ("manager:\n  api: {port: 0}\n", 2, "manager.api.port", "integer from 1 to 65535"),
    ("workers:\n  a:\n    command: [x]\n    instances: -1\n", 4, "workers.a.instances", "integer from 0 to 256"),
    ("workers:\n  a:\n    command: [x]\n    port: ${NOPE}\n", 4, "workers.a.port", "NOPE is not set"),
    ("workers:\n  a:\n    command: [x]\n    port: ${P:-x1}\n", 4, "workers.a.port", "came from ${P}"),
    (
        "legacy_support:\n  enabled: true\n  port_redirection: {3001: notaport}\n",
        3,
        "legacy_support.port_redirection.3001",
        "legacy_port",
    ),
    ("workers: [a, b]\n", 1, "workers", "expected a mapping"),
    (
        "workers:\n  a:\n    command: [x]\n    health_check: {path: health}\n",
        4,
        "workers.a.health_check.path",
        "starting with /",
    ),
    ("manager:\n  hooks: {webhook: 'http://example.com/x'}\n", 2, "manager.hooks.webhook", "loopback"),
]


@pytest.mark.parametrize(("text", "line", "key", "part"), BAD, ids=[b[2] or b[3] for b in BAD])
def test_bad_profiles_name_file_line_and_key(text, line, key, part):
    with pytest.raises(ProfileError) as info:
        parse(text)
    err = info.value
    assert err.file == F
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert part in str(err)
    assert str(err).startswith(f"{F}:{line}:")
    assert "\n" not in str(err)


def test_start_order_is_stable_topological():
    p = parse("workers:\n  c:\n    command: [x]\n    depends_on: [a]\n  b:\n    command: [x]\n  a:\n    command: [x]\n")
    assert start_order(p.workers) == ["a", "c", "b"]


def test_secrets_are_masked_in_to_dict():
    p = parse("workers:\n  a:\n    command: [x]\n    env: {DB_PASSWORD: hunter2, API_KEY: k, PLAIN: v}\n")
    env = p.to_dict()["workers"]["a"]["env"]
    assert env == {"DB_PASSWORD": "***", "API_KEY": "***", "PLAIN": "v"}
