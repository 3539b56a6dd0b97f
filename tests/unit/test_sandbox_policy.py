from __future__ import annotations

import os

import pytest

from workers.python_sandbox.policy import Limits, PolicyError, inside, safe_relative


def test_limits_from_options():
    lim = Limits.from_options({"warm_pool": 3, "timeout_s": 2, "allow_package_install": True, "package_deny": ["Evil"]})
    assert lim.warm_pool == 3 and lim.timeout_s == 2.0 and lim.package_deny == ("evil",)
    for bad in ({"nope": 1}, {"warm_pool": -1}, {"allow_package_install": "yes"}, {"package_allow": "six"}):
        with pytest.raises(PolicyError):
            Limits.from_options(bad)


def test_package_policy():
    assert "off" in Limits().package_allowed("six")
    lim = Limits(allow_package_install=True, package_deny=("evil",))
    assert lim.package_allowed("six==1.16") is None
    assert "deny-list" in lim.package_allowed("evil")
    assert "not a package name" in lim.package_allowed("six; rm -rf /")
    assert "allow-list" in Limits(allow_package_install=True, package_allow=("six",)).package_allowed("numpy")


@pytest.mark.parametrize("bad", ["/etc/passwd", "..", "../x", "a/../../x", "", "a\x00b", 7])
def test_safe_relative_refuses(bad):
    with pytest.raises(PolicyError):
        safe_relative(bad)


def test_safe_relative_and_inside(tmp_path):
    assert safe_relative("a/./b/../c.txt") == "a/c.txt"
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink("/etc", ws / "out")
    assert inside(str(ws), str(ws / "a.txt"))
    assert not inside(str(ws), str(ws / "out" / "passwd"))
