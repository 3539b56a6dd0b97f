"""WorkerMessage protocol, version 1: encode, decode, validate. No I/O.

One JSON object per WebSocket text frame; every frame has ``type``; task frames carry ``id``.
The supervisor, the worker runtime, the control API and the CLI all share this module.
"""

from __future__ import annotations

import enum
import json
from typing import Any

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
MAX_FRAME_BYTES = 16 * 1024 * 1024  # both ends set this as their WebSocket max_size


class ErrorCode(enum.StrEnum):
    """The closed set of error codes, each with its HTTP status and `cogoctl exec` exit status."""

    BAD_REQUEST = "BAD_REQUEST"
    UNSUPPORTED = "UNSUPPORTED"
    NOT_FOUND = "NOT_FOUND"
    OVERLOADED = "OVERLOADED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    WORKER_LOST = "WORKER_LOST"
    UNAUTHORIZED = "UNAUTHORIZED"
    INTERNAL = "INTERNAL"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]

    @property
    def exec_exit_code(self) -> int:
        return 124 if self is ErrorCode.TIMEOUT else 125


_HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNSUPPORTED: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.WORKER_LOST: 502,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INTERNAL: 500,
}


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 0, "normal": 1, "low": 2}[self.value]


class ProtocolError(ValueError):
    """A frame that is not valid WorkerMessage v1. ``code`` is the ErrorCode to answer with."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_REQUEST, frame_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.frame_id = frame_id


_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_LIST = (list,)
_DICT = (dict,)

# type -> {field: (accepted python types, required)}
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {
        "protocol": (_INT, True),
        "worker": (_STR, True),
        "instance": (_STR, True),
        "pid": (_INT, True),
        "port": ((*_INT, type(None)), False),
        "capabilities": (_LIST, True),
        "max_concurrency": (_INT, False),
        "token": (_STR, False),
    },
    "heartbeat": {
        "seq": (_INT, True),
        "active": (_INT, True),
        "queued": (_INT, True),
        "rss_mb": (_NUM, False),
        "ok": (_INT, False),  # tasks finished, since start
        "failed": (_INT, False),  # tasks answered with an error, since start
        "stats": (_DICT, False),  # the worker's own counters (name -> number), for /metrics
    },
    "task": {
        "id": (_STR, True),
        "capability": (_STR, True),
        "action": (_STR, True),
        "payload": (_DICT, False),
        "timeout_s": ((*_NUM, type(None)), False),
        "priority": (_STR, False),
        "idempotent": ((bool,), False),
    },
    "event": {"id": (_STR, True), "event": (_STR, True), "data": ((object,), False)},
    "result": {"id": (_STR, True), "payload": ((object,), False), "duration_ms": (_NUM, False)},
    "error": {
        "id": ((*_STR, type(None)), False),
        "code": (_STR, True),
        "message": (_STR, True),
        "details": ((*_DICT, type(None)), False),
    },
    "cancel": {"id": (_STR, True)},
    "drain": {"grace_s": (_NUM, False)},
    "shutdown": {"grace_s": (_NUM, False)},
    "welcome": {"protocol": (_INT, True), "heartbeat_interval": (_NUM, True)},
}

FRAME_TYPES = frozenset(_SCHEMA)


def validate(frame: Any) -> dict[str, Any]:
    """Check a decoded frame against the schema; return it or raise ProtocolError."""
    if not isinstance(frame, dict):
        raise ProtocolError("a frame must be a JSON object")
    ftype = frame.get("type")
    fid = frame.get("id") if isinstance(frame.get("id"), str) else None
    if not isinstance(ftype, str):
        raise ProtocolError("frame has no string 'type'", frame_id=fid)
    schema = _SCHEMA.get(ftype)
    if schema is None:
        raise ProtocolError(
            f"unknown frame type {ftype!r} (expected one of {', '.join(sorted(FRAME_TYPES))})",
            ErrorCode.UNSUPPORTED,
            fid,
        )
    for name, (types, required) in schema.items():
        if name not in frame:
            if required:
                raise ProtocolError(f"{ftype} frame lacks required field {name!r}", frame_id=fid)
            continue
        value = frame[name]
        # bool is an int in Python; never accept it where a number is meant
        if isinstance(value, bool) and bool not in types and object not in types:
            raise ProtocolError(f"{ftype}.{name} must be {_type_names(types)}, got a boolean", frame_id=fid)
        if not isinstance(value, types):
            raise ProtocolError(
                f"{ftype}.{name} must be {_type_names(types)}, got {type(value).__name__}", frame_id=fid
            )
    if ftype == "task":
        prio = frame.get("priority", "normal")
        if prio not in ("high", "normal", "low"):
            raise ProtocolError(f"task.priority must be high, normal or low, got {prio!r}", frame_id=fid)
        t = frame.get("timeout_s")
        if t is not None and t <= 0:
            raise ProtocolError("task.timeout_s must be > 0", frame_id=fid)
    if ftype == "error" and frame["code"] not in ErrorCode.__members__:
        raise ProtocolError(f"error.code {frame['code']!r} is not a known error code", frame_id=fid)
    if ftype == "hello" and not all(isinstance(c, str) for c in frame["capabilities"]):
        raise ProtocolError("hello.capabilities must be a list of strings")
    return frame


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}
    out = [names.get(t, t.__name__) for t in types if t is not type(None)]
    if type(None) in types:
        out.append("null")
    return " or ".join(dict.fromkeys(out))


def decode(data: str | bytes) -> dict[str, Any]:
    """Parse and validate one frame."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("frame is not UTF-8") from exc
    try:
        frame = json.loads(data)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    return validate(frame)


def encode(frame: dict[str, Any]) -> str:
    """Validate and serialise one frame."""
    validate(frame)
    return json.dumps(frame, separators=(",", ":"), default=str)


def check_version(hello: dict[str, Any]) -> None:
    if hello["protocol"] not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {hello['protocol']} is not supported; this supervisor speaks "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            ErrorCode.UNSUPPORTED,
        )


# -- constructors: the one place each frame's shape is written down ---------------------------


def error_frame(code: ErrorCode, message: str, frame_id: str | None = None, **details: Any) -> dict[str, Any]:
    return {"type": "error", "id": frame_id, "code": code.value, "message": message, "details": details or None}


def task_frame(
    task_id: str,
    capability: str,
    action: str,
    payload: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    priority: str = "normal",
) -> dict[str, Any]:
    return {
        "type": "task",
        "id": task_id,
        "capability": capability,
        "action": action,
        "payload": payload or {},
        "timeout_s": timeout_s,
        "priority": priority,
    }


def result_frame(task_id: str, payload: Any, duration_ms: float) -> dict[str, Any]:
    return {"type": "result", "id": task_id, "payload": payload, "duration_ms": round(duration_ms, 3)}


def event_frame(task_id: str, event: str, data: Any) -> dict[str, Any]:
    return {"type": "event", "id": task_id, "event": event, "data": data}


def heartbeat_frame(seq: int, active: int, queued: int, rss_mb: float | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "heartbeat", "seq": seq, "active": active, "queued": queued}
    if rss_mb is not None:
        frame["rss_mb"] = round(rss_mb, 1)
    return frame


def exit_status(payload: Any) -> int:
    """The exit status `cogoctl exec` passes through: the task's exit_code, or 128+N for signal N."""
    if isinstance(payload, dict):
        sig = payload.get("signal")
        if isinstance(sig, int) and not isinstance(sig, bool) and sig > 0:
            return 128 + sig
        code = payload.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code & 0xFF if code >= 0 else 128 + (-code)
    return 0
