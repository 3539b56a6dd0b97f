"""Where a supervisor's files live. Light: the CLI imports this on every command."""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "cogoctl.sock"
LOCK_NAME = "cogoctl.lock"
PID_NAME = "cogoctl.pid"
API_TOKEN_NAME = "api.token"
WORKER_TOKEN_NAME = "worker.token"
SUPERVISOR_LOG = "supervisor.log"
MAX_UNIX_PATH = 107


def state_dir(profile_name: str) -> Path:
    """$COGO_STATE_DIR, else $XDG_STATE_HOME/cogoctl/<profile> (default ~/.local/state/cogoctl/<profile>)."""
    explicit = os.environ.get("COGO_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "cogoctl" / profile_name


def profile_key(name_or_path: str) -> str:
    """The name a --profile value gets in the default state dir: `dev`, or a path's file stem."""
    return (
        Path(name_or_path).stem if ("/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))) else name_or_path
    )


def socket_path(state: Path, configured: str | None = None) -> str:
    return configured or str(state / SOCKET_NAME)
