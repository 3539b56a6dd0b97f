"""WorkerMessage v1: encode/decode/validate every frame type, reject malformed ones. No sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cogoctl import protocol as p
from cogoctl.protocol import ErrorCode, ProtocolError

VALID = [
    {"type": "hello", "protocol": 1, "worker": "python-sandbox", "instance": "python-sandbox-0", "pid": 4242,
     "port": 3011, "capabilities": ["python-execution"], "max_concurrency": 4},
    p.heartbeat_frame(17, 1, 0, 41.5),
    p.task_frame("7f3c", "python-execution", "run", {"code": "print(6*7)"}, 30, "normal"),
    p.event_frame("7f3c", "stdout", "42\n"),
    p.result_frame("7f3c", {"exit_code": 0}, 4.1),
    p.error_frame(ErrorCode.TIMEOUT, "task exceeded 30 s", "7f3c", timeout_s=30),
    {"type": "cancel", "id": "7f3c"},
    {"type": "drain", "grace_s": 5},
    {"type": "shutdown", "grace_s": 5},
    {"type": "welcome", "protocol": 1, "heartbeat_interval": 1.0},
]  # fmt: skip


@pytest.mark.parametrize("frame", VALID, ids=[f["type"] for f in VALID])
def test_round_trip(frame):
    assert p.decode(p.encode(frame)) == frame


@pytest.mark.parametrize(
    ("raw", "part", "code"),
    [
        ("not json", "not JSON", ErrorCode.BAD_REQUEST),
        ("[1,2]", "JSON object", ErrorCode.BAD_REQUEST),
        ('{"id": "x"}', "no string 'type'", ErrorCode.BAD_REQUEST),
        ('{"type": "teleport"}', "unknown frame type", ErrorCode.UNSUPPORTED),
        ('{"type": "heartbeat", "seq": 1, "active": 0}', "lacks required field 'queued'", ErrorCode.BAD_REQUEST),
        (
            '{"type": "heartbeat", "seq": "1", "active": 0, "queued": 0}',
            "heartbeat.seq must be an integer",
            ErrorCode.BAD_REQUEST,
        ),
        ('{"type": "heartbeat", "seq": true, "active": 0, "queued": 0}', "boolean", ErrorCode.BAD_REQUEST),
        (
            '{"type": "task", "id": "1", "capability": "c", "action": "a", "priority": "urgent"}',
            "priority",
            ErrorCode.BAD_REQUEST,
        ),
        (
            '{"type": "task", "id": "1", "capability": "c", "action": "a", "timeout_s": 0}',
            "timeout_s must be > 0",
            ErrorCode.BAD_REQUEST,
        ),
        ('{"type": "error", "code": "OOPS", "message": "m"}', "not a known error code", ErrorCode.BAD_REQUEST),
        (
            '{"type": "hello", "protocol": 1, "worker": "w", "instance": "w-0", "pid": 1, "capabilities": [1]}',
            "list of strings",
            ErrorCode.BAD_REQUEST,
        ),
    ],
)
def test_malformed_frames_are_rejected_clearly(raw, part, code):
    with pytest.raises(ProtocolError) as info:
        p.decode(raw)
    assert part in str(info.value)
    assert info.value.code is code


def test_task_errors_carry_the_frame_id():
    with pytest.raises(ProtocolError) as info:
        p.decode('{"type": "task", "id": "abc", "capability": "c"}')
    assert info.value.frame_id == "abc"


def test_unknown_protocol_version_names_supported_ones():
    hello = dict(VALID[0], protocol=2)
    with pytest.raises(ProtocolError) as info:
        p.check_version(hello)
    assert "speaks 1" in str(info.value) and info.value.code is ErrorCode.UNSUPPORTED


def test_error_codes_map_to_http_and_exit_statuses():
    assert ErrorCode.OVERLOADED.http_status == 429
    assert ErrorCode.UNAUTHORIZED.http_status == 401
    assert ErrorCode.TIMEOUT.exec_exit_code == 124
    assert {c.exec_exit_code for c in ErrorCode if c is not ErrorCode.TIMEOUT} == {125}
    assert len({c.http_status for c in ErrorCode}) == len(ErrorCode)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_decode_never_raises_anything_but_protocol_error(value):
    try:
        frame = p.decode(json.dumps(value))
    except ProtocolError:
        return
    assert frame["type"] in p.FRAME_TYPES


@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes(data):
    try:
        p.decode(data)
    except ProtocolError:
        pass


@given(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["high", "normal", "low"]),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e6)),
)
def test_task_round_trip_property(tid, prio, payload, timeout):
    frame = p.task_frame(tid, "cap", "act", payload, timeout, prio)
    assert p.decode(p.encode(frame)) == frame
