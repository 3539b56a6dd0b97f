"""The `cogoctl` entry point: one line per error with its documented exit code, tracebacks only
with --debug, and `status` served without importing typer or rich (cli/fast.py)."""

from __future__ import annotations

import os
import sys

from cogoctl.errors import CogoError


def main() -> None:
    argv = sys.argv[1:]
    try:
        fast = None
        if argv[:1] == ["status"]:
            from cogoctl.cli import fast as fast_path

            fast = fast_path.parse_status(argv)
        if fast is not None:
            fast_path.status_command(*fast)
            rc = 0
        else:
            from cogoctl.cli.app import run

            rc = run(argv)
    except CogoError as exc:
        if os.environ.get("COGO_DEBUG"):
            raise
        print(f"cogoctl: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `cogoctl ... | head`
        sys.exit(0)
    sys.exit(rc)
