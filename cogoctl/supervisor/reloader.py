"""Applying a changed profile to the running supervisor (`cogoctl reload`, SIGHUP)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from cogoctl.profile import Profile, load_profile
from cogoctl.supervisor.balancer import Chooser
from cogoctl.supervisor.reload import Action, plan
from cogoctl.supervisor.states import State

if TYPE_CHECKING:
    from cogoctl.supervisor.daemon import Daemon


class Reloader:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = asyncio.Lock()

    async def reload(self, environ: dict[str, str] | None, dry_run: bool) -> dict[str, Any]:
        """Re-read the profile the supervisor was started with. A profile that no longer validates
        raises its ProfileError and nothing changes."""
        async with self._lock:
            d = self.daemon
            new = load_profile(d.profile.path, environ)  # ProfileError: refused, nothing touched
            p = plan(d.profile, new)
            result: dict[str, Any] = {"plan": p.to_dict(), "dry_run": dry_run, "outcome": []}
            if dry_run:
                return result
            d.manager.events.emit("reload", plan=p.to_dict())
            result["outcome"] = await self._apply(new, p)
            return result

    async def _apply(self, new: Profile, p: Any) -> list[dict[str, Any]]:
        d = self.daemon
        m = d.manager
        outcome: list[dict[str, Any]] = []
        # the new settings first: everything below reads them
        d.profile = m.profile = dataclasses.replace(new, manager=dataclasses.replace(new.manager, socket=d.profile.manager.socket,
                                                                                    api=d.profile.manager.api))  # fmt: skip
        d.monitor.hooks = new.manager.hooks
        for step in p.steps:
            name = step.worker
            ok = True
            if step.action is Action.STOP:
                insts = list(m.by_worker[name])
                for inst in insts:
                    m.stop_instance(inst)
                await m.wait_for(lambda insts=insts: all(i.task is None or i.task.done() for i in insts), 60)
                for inst in insts:
                    if not inst.alive:
                        m.remove_instance(inst)
                m.remove_worker(name)
            elif step.action is Action.START:
                m.add_worker(new.workers[name])
                m.start_worker(name, "added by reload")
                ok = await m.wait_for(lambda name=name: all(i.state in (State.RUNNING, State.FATAL, State.EXITED)
                                                            for i in m.by_worker[name]), new.workers[name].start_timeout + 5)  # fmt: skip
                ok = ok and all(i.state is State.RUNNING for i in m.by_worker[name])
            elif step.action is not Action.KEEP:
                cfg = new.workers[name]
                m.update_worker(cfg)
                q = d.dispatcher.queues.get(name)
                if q is not None:
                    q.limit = cfg.queue_limit
                    d.dispatcher.choosers[name] = Chooser(cfg.strategy)
                if step.action is Action.RESTART:
                    ok = await d.rolling_restart(list(m.by_worker[name]), "reload: " + ", ".join(step.reasons))
                if len(m.by_worker[name]) != cfg.instances:
                    ok = await d.scaler.scale(name, cfg.instances, "reload: " + ", ".join(step.reasons)) and ok
            outcome.append({"worker": name, "action": step.action.value, "ok": ok,
                            "pids": [i.pid for i in m.by_worker.get(name, []) if i.alive]})  # fmt: skip
        d.watcher_changed()
        return outcome
