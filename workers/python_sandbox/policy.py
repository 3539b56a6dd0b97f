"""The sandbox's limits (from the profile's `options`) and workspace path checks. Pure."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, fields
from typing import Any


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 30.0  # wall clock; the whole process group is killed
    memory_mb: int = 256  # address space above the interpreter's own (RLIMIT_AS)
    cpu_s: int = 10  # RLIMIT_CPU
    file_size_mb: int = 64  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 16  # RLIMIT_NPROC (each run has a uid of its own)
    output_kb: int = 1024  # stdout + stderr forwarded; more is truncated, 4x more kills
    file_kb: int = 1024  # file-operations: largest file written or read
    warm_pool: int = 2
    max_sessions: int = 8
    session_idle_s: float = 300.0
    allow_package_install: bool = False
    package_allow: tuple[str, ...] = ()  # empty: any name not denied
    package_deny: tuple[str, ...] = ()
    uid_base: int = 62000  # instance N's runs use uids uid_base + 1000 N .. + 999 (no passwd entry needed)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Limits:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if key in ("client_config",):
                continue
            if key not in known:
                raise PolicyError(f"unknown python-sandbox option {key!r} (known: {', '.join(sorted(known))})")
            default = known[key].default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise PolicyError(f"option {key} must be true or false")
            elif isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"option {key} must be a list of names")
                value = tuple(v.lower() for v in value)
            elif isinstance(default, int | float):
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise PolicyError(f"option {key} must be a number >= 0")
                value = type(default)(value)
            values[key] = value
        return cls(**values)

    def package_allowed(self, name: str) -> str | None:
        """None when allowed, else the reason."""
        if not self.allow_package_install:
            return "package installs are off for this worker (options.allow_package_install)"
        base = name.split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].strip().lower()
        if not base or not all(c.isalnum() or c in "-_." for c in base):
            return f"{name!r} is not a package name"
        if base in self.package_deny:
            return f"{base} is on the deny-list"
        if self.package_allow and base not in self.package_allow:
            return f"{base} is not on the allow-list"
        return None


def safe_relative(name: Any) -> str:
    """A workspace-relative path, or PolicyError: no absolute paths, no `..`, nothing odd."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise PolicyError("path must be a non-empty string")
    if name.startswith("/"):
        raise PolicyError(f"{name!r}: absolute paths are refused; give a path inside the workspace")
    norm = posixpath.normpath(name)  # the path actually used: `b/../c` is `c`
    if norm == ".." or norm.startswith("../"):
        raise PolicyError(f"{name!r}: paths that leave the workspace are refused")
    return norm


def inside(workspace: str, path: str) -> bool:
    """Whether `path` (resolving symlinks) stays within `workspace`."""
    real_ws = os.path.realpath(workspace)
    real = os.path.realpath(path)
    return real == real_ws or real.startswith(real_ws + os.sep)
