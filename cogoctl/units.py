"""Parsing of durations, sizes and percentages as written in profiles. Pure."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB|K|M|G)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    None: 1,
}


def parse_duration(value: object) -> float:
    """`500ms`, `30s`, `2m`, `1h`, or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 500ms, 30s or 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration >= 0")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError("a duration such as 500ms, 30s or 2m")


def parse_size(value: object) -> int:
    """`512MB`, `10MB`, `1GB`, `64KB`, or a bare number of bytes -> bytes (binary units)."""
    if isinstance(value, bool):
        raise ValueError("a size such as 512MB or 1GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size >= 0")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError("a size such as 512MB or 1GB")


def parse_percent(value: object) -> float:
    """`90%` or a bare number -> percent of one core (may exceed 100 for several cores)."""
    if isinstance(value, bool):
        raise ValueError("a percentage such as 90%")
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip().removesuffix("%")
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number > 0:
                return number
    raise ValueError("a percentage such as 90%")


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_size(num_bytes: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if num_bytes >= size:
            return f"{num_bytes / size:g}{unit}"
    return f"{num_bytes}B"
