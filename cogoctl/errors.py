"""One exception tree for everything a user can cause, and the exit codes it maps to.

Every user-facing error is one line: what went wrong, where, and how to fix it.
The CLI prints ``str(err)`` and exits with ``err.exit_code``; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit statuses of every command except ``exec`` (which passes the task's own through)."""

    OK = 0
    FAILED = 1
    USAGE = 2  # bad usage or bad profile
    NO_SUPERVISOR = 3
    # `cogoctl exec` only (habits of `timeout` and `docker exec`):
    TASK_TIMEOUT = 124
    TASK_NOT_RUN = 125


class CogoError(Exception):
    """Base of every error cogoctl raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(CogoError):
    exit_code = ExitCode.USAGE


class ProfileError(UsageError):
    """A profile that cannot be used. Names the file, the line and the key path."""

    def __init__(self, file: str, line: int | None, key: str, problem: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        where = f"{file}:{line}" if line else file
        what = f" {key}:" if key else ""
        super().__init__(f"{where}:{what} {problem}")


class NoSupervisorError(CogoError):
    exit_code = ExitCode.NO_SUPERVISOR


class AlreadyRunningError(CogoError):
    exit_code = ExitCode.FAILED


class StartFailedError(CogoError):
    exit_code = ExitCode.FAILED


class ApiError(CogoError):
    """An error answer from the control plane (code is a protocol ErrorCode value)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        self.code = code
        self.status = status
        super().__init__(message)
        self.exit_code = ExitCode.USAGE if code in ("BAD_REQUEST", "NOT_FOUND") else ExitCode.FAILED
