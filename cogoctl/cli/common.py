"""Helpers the command modules share: finding the supervisor, printing."""

from __future__ import annotations

import sys
from pathlib import Path

from cogoctl import paths
from cogoctl.client import Client


def state_dir_for(profile: str) -> Path:
    return paths.state_dir(paths.profile_key(profile))


def client_for(profile: str, timeout: float | None = 30.0) -> Client:
    return client_for_state(state_dir_for(profile), timeout)


def client_for_state(sd: Path, timeout: float | None = 30.0) -> Client:
    return Client(configured_socket(sd) or paths.socket_path(sd), timeout=timeout)


def configured_socket(sd: Path) -> str | None:
    """A supervisor started with manager.socket writes where it listens next to its pid file."""
    try:
        return (sd / "socket.path").read_text().strip() or None
    except OSError:
        return None


def err(message: str) -> None:
    print(message, file=sys.stderr)
