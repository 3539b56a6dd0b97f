from __future__ import annotations

import pytest

from cogoctl.supervisor.logs import mask_secrets, secret_values, tail_lines
from cogoctl.units import parse_duration, parse_percent, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), (15, 15), ("1.5s", 1.5), ("30", 30)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "5 days", True, None, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes_and_percents():
    assert parse_size("512MB") == 512 * 1024**2
    assert parse_size("10KB") == 10 * 1024 and parse_size("1GB") == 1024**3 and parse_size(100) == 100
    assert parse_percent("90%") == 90 and parse_percent(150) == 150
    for bad in ("lots", True, -1):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError):
        parse_percent("0%")


def test_tail_spans_rotated_files(tmp_path):
    log = tmp_path / "w.log"
    (tmp_path / "w.log.2").write_text("a1\na2\n")
    (tmp_path / "w.log.1").write_text("b1\nb2\nb3\n")
    log.write_text("c1\nc2\n")
    assert tail_lines(log, 4, backups=2) == ["b2", "b3", "c1", "c2"]
    assert tail_lines(log, 100, backups=2) == ["a1", "a2", "b1", "b2", "b3", "c1", "c2"]
    assert tail_lines(log, 0) == []
    big = tmp_path / "big.log"
    big.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(big, 3) == ["line 99997", "line 99998", "line 99999"]


def test_secret_masking():
    env = {"API_TOKEN": "abcd1234", "HOME": "/root", "DB_PASSWORD": "pw-long"}
    values = secret_values(env)
    assert sorted(values) == ["abcd1234", "pw-long"]
    assert mask_secrets("token=abcd1234 home=/root", values) == "token=*** home=/root"
