"""The reload plan: what a new profile changes, worker by worker, and why. Pure.

added -> start; removed -> stop; changed -> restart (rolling where several instances); a change
to `instances` alone -> scale; unchanged -> untouched (same pids). Manager settings that cannot
change under a running supervisor are named as needing `down`/`up`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from cogoctl.profile import BRIDGE_WORKER, Profile, WorkerConfig

# scaling fields: changing only these never restarts anything
_SCALE_ONLY = {"instances", "min_instances", "max_instances", "scale_up_queue", "scale_cooldown"}
# balancer fields: applied to the queue at once, no restart
_LIVE = {"queue_limit", "strategy", "watch", "watch_ignore", "restart", "limits",
         "heartbeat_misses", "hang_kill_timeout", "stop_timeout", "start_timeout", "min_uptime", "stop_signal"}  # fmt: skip


class Action(str, enum.Enum):  # noqa: UP042 (json-friendly values)
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SCALE = "scale"
    UPDATE = "update"  # settings applied without touching processes
    KEEP = "keep"


@dataclass
class Step:
    worker: str
    action: Action
    reasons: list[str] = field(default_factory=list)
    instances: int | None = None  # for START and SCALE

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "action": self.action.value,
            "reasons": self.reasons,
            "instances": self.instances,
        }


@dataclass
class Plan:
    steps: list[Step]
    needs_restart_of_supervisor: list[str]
    applied_live: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.to_dict() for s in self.steps],
            "needs_down_up": self.needs_restart_of_supervisor,
            "applied_live": self.applied_live,
        }


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (`env.LOG_LEVEL`, `restart.backoff_max`, `command`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _worker_dict(w: WorkerConfig) -> dict[str, Any]:
    return asdict(w)


def plan(old: Profile, new: Profile) -> Plan:
    steps: list[Step] = []
    old_w = {n: w for n, w in old.workers.items() if w.enabled}
    new_w = {n: w for n, w in new.workers.items() if w.enabled}
    for name in old_w:
        if name not in new_w:
            why = "disabled" if name in new.workers else "removed from the profile"
            steps.append(Step(name, Action.STOP, [why]))
    for name, cfg in new_w.items():
        if name not in old_w:
            why = "enabled" if name in old.workers else "added to the profile"
            steps.append(Step(name, Action.START, [why], cfg.instances))
            continue
        keys = diff_keys(_worker_dict(old_w[name]), _worker_dict(cfg))
        if name == BRIDGE_WORKER and old.legacy_support != new.legacy_support:
            keys += [f"legacy_support.{k}" for k in diff_keys(asdict(old.legacy_support), asdict(new.legacy_support))]
        top = {k.split(".")[0] for k in keys}
        if not keys:
            steps.append(Step(name, Action.KEEP))
        elif top <= _SCALE_ONLY:
            steps.append(Step(name, Action.SCALE, [f"{k} changed" for k in keys], cfg.instances))
        elif top <= _SCALE_ONLY | _LIVE:
            steps.append(Step(name, Action.UPDATE, [f"{k} changed" for k in keys], cfg.instances))
        else:
            steps.append(Step(name, Action.RESTART, [f"{k} changed" for k in keys], cfg.instances))
    needs = [
        f"manager.{k}"
        for k in diff_keys(asdict(old.manager), asdict(new.manager))
        if k.split(".")[0] in ("socket", "api")
    ]
    live = [
        f"manager.{k}"
        for k in diff_keys(asdict(old.manager), asdict(new.manager))
        if k.split(".")[0] not in ("socket", "api")
    ]
    return Plan(steps, needs, live)
