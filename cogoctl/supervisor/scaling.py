"""Changing a worker's instance count: `cogoctl scale`, and autoscaling on queue depth."""

from __future__ import annotations

import asyncio
import logging
import time

from cogoctl.supervisor.dispatch import Dispatcher
from cogoctl.supervisor.manager import Manager
from cogoctl.supervisor.states import State

log = logging.getLogger("cogoctl.scaling")
TICK = 0.5


class Scaler:
    def __init__(self, manager: Manager, dispatcher: Dispatcher) -> None:
        self.m = manager
        self.d = dispatcher
        self._started = time.monotonic()

    async def scale(self, name: str, count: int, reason: str) -> bool:
        """New instances are started and awaited RUNNING; surplus ones (highest index first) are
        drained (no new tasks, in-flight ones finish), stopped and removed."""
        m = self.m
        insts = m.by_worker[name]
        cfg = m.workers[name]
        m.events.emit("scale", worker=name, old=len(insts), new=count, reason=reason)
        if count > len(insts):
            new = [m.add_instance(cfg) for _ in range(count - len(insts))]
            for inst in new:
                m.start_instance(inst, f"scaled to {count} ({reason})")
            settled = await m.wait_for(
                lambda: all(i.state in (State.RUNNING, State.FATAL, State.EXITED) for i in new), cfg.start_timeout + 5
            )
            return settled and all(i.state is State.RUNNING for i in new)
        surplus = sorted(insts, key=lambda i: i.index)[count:]
        for inst in surplus:
            inst.draining = True
        m.notify()
        await asyncio.gather(*(self.d.drain(i, cfg.stop_timeout) for i in surplus))
        for inst in surplus:
            m.stop_instance(inst)
        await m.wait_for(lambda: all(i.task is None or i.task.done() for i in surplus), cfg.stop_timeout + 5)
        for inst in surplus:
            if not inst.alive:
                m.remove_instance(inst)
        self.d.pump(name)
        return all(not i.alive for i in surplus)

    async def autoscale_forever(self) -> None:
        while True:
            try:
                await self._autoscale_loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscaler failed; restarting it")
                await asyncio.sleep(1)

    async def _autoscale_loop(self) -> None:
        """Between min_instances and max_instances: one more instance when queued tasks per RUNNING
        instance exceed scale_up_queue; one fewer when nothing was queued or in flight for
        scale_cooldown. At most one step per scale_cooldown."""
        last_step: dict[str, float] = {}
        busy_at: dict[str, float] = {}
        m = self.m
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for name, cfg in list(m.workers.items()):
                if cfg.min_instances is None or cfg.max_instances is None:
                    continue
                insts = m.by_worker[name]
                q = self.d.queues.get(name)
                queued = len(q) if q else 0
                if queued or any(self.d.load(i) for i in insts):
                    busy_at[name] = now
                if now - last_step.get(name, -1e9) < cfg.scale_cooldown:
                    continue
                running = sum(1 for i in insts if i.state is State.RUNNING) or 1
                if queued / running > cfg.scale_up_queue and len(insts) < cfg.max_instances:
                    last_step[name] = now
                    await self.scale(name, len(insts) + 1, f"autoscale: {queued} queued over {running} running")
                elif len(insts) > cfg.min_instances and now - busy_at.get(name, self._started) >= cfg.scale_cooldown:
                    last_step[name] = now
                    await self.scale(name, len(insts) - 1, f"autoscale: idle for {cfg.scale_cooldown:g}s")
