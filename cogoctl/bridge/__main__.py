"""The bridge as a supervised worker (`legacy-bridge`, added by `cogoctl up` when the profile
enables legacy_support): the worker runtime links it to the supervisor and its heartbeats carry
the listeners' counters (shown in /metrics as cogo_worker_stat)."""

from __future__ import annotations

import argparse
import sys

from cogoctl.bridge.listener import PortInUse, emit
from cogoctl.bridge.server import Bridge
from cogoctl.errors import CogoError
from cogoctl.profile import load_profile
from cogoctl.worker import Worker


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cogoctl.bridge")
    parser.add_argument("--profile", required=True)
    args = parser.parse_args()
    try:
        profile = load_profile(args.profile)
    except CogoError as exc:
        print(f"cogoctl bridge: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    worker = Worker("legacy-bridge")
    bridge = Bridge(profile, worker.settings.socket)
    worker.stats = bridge.stats

    async def start() -> None:
        try:
            await bridge.start()
        except PortInUse as exc:
            emit("listener failed", error=str(exc))
            print(f"cogoctl bridge: {exc}", file=sys.stderr, flush=True)
            sys.exit(int(exc.exit_code))

    worker.on_start.append(start)
    worker.on_stop.append(bridge.stop)
    worker.run()


if __name__ == "__main__":
    main()
