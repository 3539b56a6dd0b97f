"""Which worker a legacy port leads to, and which of its instances gets the next connection. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from cogoctl.profile import Profile


@dataclass(frozen=True)
class Route:
    legacy_port: int
    worker_port: int
    worker: str | None  # the profile's worker owning worker_port; None: a fixed address


def routes(profile: Profile) -> list[Route]:
    by_port = {w.port: w.name for w in profile.workers.values() if w.port}
    return [
        Route(legacy, target, by_port.get(target))
        for legacy, target in sorted(profile.legacy_support.port_redirection.items())
    ]


@dataclass
class Picker:
    """Round robin over the ports of the RUNNING instances of one worker."""

    _next: int = 0
    _last: tuple[int, ...] = field(default_factory=tuple)

    def pick(self, ports: list[int]) -> int | None:
        if not ports:
            return None
        ordered = tuple(sorted(ports))
        if ordered != self._last:  # instances changed: keep rotating from where we were
            self._last = ordered
        port = ordered[self._next % len(ordered)]
        self._next += 1
        return port
