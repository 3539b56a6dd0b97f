"""Live reload and code watching with real processes."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.helpers import wait_until

pytestmark = pytest.mark.timeout(90)

WATCHED = """
manager:
  watch: true
  watch_debounce: 300ms
workers:
  alpha:
    command: [sleep, "300"]
    min_uptime: 100ms
    watch: [src/alpha]
    watch_ignore: ["*.tmp"]
  beta:
    command: [sleep, "300"]
    min_uptime: 100ms
    watch: [src/beta]
"""


def pids(cogo) -> dict[str, int]:
    return {w["instance"]: w["pid"] for w in cogo.status()}


def watch_events(cogo) -> list[dict]:
    return [e for e in cogo.events() if e["kind"] == "watch"]


@pytest.fixture
def watched(cogo):
    for d in ("alpha", "beta"):
        (cogo.root / "src" / d / "__pycache__").mkdir(parents=True)
    cogo.write_profile(WATCHED)
    cogo.up()
    return cogo


def test_touching_a_watched_file_restarts_only_its_worker(watched):
    cogo = watched
    before = pids(cogo)
    (cogo.root / "src" / "alpha" / "main.py").write_text("x = 1\n")
    after = wait_until(lambda: (p := pids(cogo))["alpha-0"] != before["alpha-0"] and cogo.instance("alpha-0")["state"] == "RUNNING" and p,
                       what="alpha restarted")  # fmt: skip
    assert after["beta-0"] == before["beta-0"]
    ev = watch_events(cogo)
    assert len(ev) == 1 and ev[0]["worker"] == "alpha" and ev[0]["files"][0].endswith("src/alpha/main.py")
    reasons = [e["reason"] for e in cogo.events() if e.get("instance") == "alpha-0" and e.get("new") == "STOPPING"]
    assert reasons == ["files changed: main.py"]


def test_fifty_rapid_changes_are_one_restart(watched):
    cogo = watched
    before = pids(cogo)
    target = cogo.root / "src" / "alpha" / "busy.py"
    for i in range(50):
        target.write_text(f"x = {i}\n")
    wait_until(lambda: pids(cogo)["alpha-0"] != before["alpha-0"] and cogo.instance("alpha-0")["state"] == "RUNNING",
               what="restart")  # fmt: skip
    # the next change is a marker: once its restart is seen, every earlier batch has been handled
    (cogo.root / "src" / "beta" / "marker.py").write_text("")
    wait_until(lambda: any(e["worker"] == "beta" for e in watch_events(cogo)), what="marker")
    assert [e["worker"] for e in watch_events(cogo)] == ["alpha", "beta"]
    assert cogo.instance("alpha-0")["restarts"] == 1


def test_ignored_paths_restart_nothing(watched):
    cogo = watched
    before = pids(cogo)
    (cogo.root / "src" / "alpha" / "scratch.tmp").write_text("ignored by watch_ignore")
    (cogo.root / "src" / "alpha" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"ignored by default")
    (cogo.root / "src" / "beta" / "marker.py").write_text("")  # in the same burst: only beta restarts
    wait_until(lambda: any(e["worker"] == "beta" for e in watch_events(cogo)), what="marker")
    assert [e["worker"] for e in watch_events(cogo)] == ["beta"]
    assert pids(cogo)["alpha-0"] == before["alpha-0"]


def test_no_watch_overrides_the_profile(cogo):
    (cogo.root / "src" / "alpha").mkdir(parents=True)
    (cogo.root / "src" / "beta").mkdir(parents=True)
    cogo.write_profile(WATCHED)
    cogo.up("--no-watch")
    before = pids(cogo)
    (cogo.root / "src" / "alpha" / "main.py").write_text("x = 1\n")
    # nothing to wait for when nothing is watched; the status says so
    import json

    assert json.loads(cogo.run("status", "--json").stdout)["supervisor"]["watch"] is False
    assert pids(cogo) == before and watch_events(cogo) == []


RELOAD = """
workers:
  keep:
    command: [sleep, "300"]
    min_uptime: 100ms
  change:
    command: [sleep, "300"]
    min_uptime: 100ms
    env: {LOG_LEVEL: info}
  gone:
    command: [sleep, "300"]
    min_uptime: 100ms
"""
RELOADED = RELOAD.replace("LOG_LEVEL: info", "LOG_LEVEL: debug").replace("  gone:", "  added:")


def test_reload_applies_exactly_the_difference(cogo):
    cogo.write_profile(RELOAD)
    cogo.up()
    before = pids(cogo)
    cogo.write_profile(RELOADED)
    res = cogo.run("reload")
    assert res.returncode == 0, res.stderr
    assert "restart  change (env.LOG_LEVEL changed)" in res.stdout
    assert "stop     gone (removed from the profile)" in res.stdout
    assert "start    added x1 (added to the profile)" in res.stdout
    assert "keep     keep" in res.stdout
    after = pids(cogo)
    assert set(after) == {"keep-0", "change-0", "added-0"}
    assert after["keep-0"] == before["keep-0"]  # unchanged: untouched
    assert after["change-0"] != before["change-0"]
    assert all(w["state"] == "RUNNING" for w in cogo.status())


def test_dry_run_changes_nothing(cogo):
    cogo.write_profile(RELOAD)
    cogo.up()
    before = pids(cogo)
    cogo.write_profile(RELOADED)
    res = cogo.run("reload", "--dry-run")
    assert res.returncode == 0 and "(dry run: nothing changed)" in res.stdout and "restart  change" in res.stdout
    assert pids(cogo) == before
    assert not [e for e in cogo.events() if e["kind"] == "reload"]


def test_broken_profile_on_reload_is_refused_and_nothing_changes(cogo):
    cogo.write_profile(RELOAD)
    cogo.up()
    before = pids(cogo)
    broken = RELOADED + "    stop_timeout: soon\n"  # a bad value in the added worker
    assert "stop_timeout: soon" in broken
    cogo.write_profile(broken)
    res = cogo.run("reload")
    assert res.returncode == 2
    assert f"{cogo.profile_path}:" in res.stderr and "workers.added.stop_timeout" in res.stderr
    assert "\n" not in res.stderr.strip()
    assert pids(cogo) == before


def test_sighup_reloads_like_the_command(cogo):
    cogo.write_profile(RELOAD)
    cogo.up()
    before = pids(cogo)
    cogo.write_profile(RELOADED)
    os.kill(cogo.supervisor_pid(), signal.SIGHUP)
    after = wait_until(lambda: "added-0" in (p := pids(cogo)) and cogo.instance("added-0")["state"] == "RUNNING" and p,
                       what="reloaded")  # fmt: skip
    wait_until(lambda: "gone-0" not in pids(cogo), what="gone stopped")
    after = pids(cogo)
    assert after["keep-0"] == before["keep-0"] and after["change-0"] != before["change-0"]
    assert [e for e in cogo.events() if e["kind"] == "reload"]
