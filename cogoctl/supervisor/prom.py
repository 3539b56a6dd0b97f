"""GET /metrics: the original design's metrics per instance, in Prometheus text format.

Built with the official client library from the registry at scrape time (a custom collector),
so nothing is updated on the hot paths. prometheus_client is imported on the first scrape only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cogoctl.supervisor.states import State

if TYPE_CHECKING:
    from cogoctl.supervisor.manager import Manager

_registry: Any = None


def render(manager: Manager, extra: list[Any] | None = None) -> tuple[bytes, str]:
    global _registry
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if _registry is None or getattr(_registry, "_cogo_manager", None) is not manager:
        _registry = CollectorRegistry(auto_describe=False)
        _registry.register(_Collector(manager, extra or []))
        _registry._cogo_manager = manager
    return generate_latest(_registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, manager: Manager, extra: list[Any]) -> None:
        self.m = manager
        self.extra = extra  # more collectors (the balancer adds its own)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["worker", "instance"]
        status = GaugeMetricFamily(
            "cogo_service_status", "1 for the instance's current state", labels=[*labels, "state"]
        )
        up = GaugeMetricFamily("cogo_up", "1 when the instance is RUNNING", labels=labels)
        resp = GaugeMetricFamily("cogo_response_time_ms", "duration of the last /health probe", labels=labels)
        conns = GaugeMetricFamily("cogo_active_connections", "tasks in progress on the instance", labels=labels)
        queue = GaugeMetricFamily("cogo_task_queue_size", "tasks waiting inside the instance", labels=labels)
        rate = GaugeMetricFamily(
            "cogo_success_rate", "share of the instance's tasks answered without error", labels=labels
        )
        errors = CounterMetricFamily("cogo_error_count", "tasks the instance answered with an error", labels=labels)
        mem = GaugeMetricFamily("cogo_memory_usage_mb", "rss of the instance and its descendants", labels=labels)
        cpu = GaugeMetricFamily(
            "cogo_cpu_usage_percent", "cpu of the instance and its descendants (100 = one core)", labels=labels
        )
        restarts = CounterMetricFamily("cogo_restarts", "restarts of the instance", labels=labels)
        hb = GaugeMetricFamily("cogo_last_heartbeat_age_seconds", "seconds since the last heartbeat", labels=labels)
        stat = GaugeMetricFamily(
            "cogo_worker_stat", "a worker's own counters, from its heartbeats", labels=[*labels, "stat"]
        )
        now = time.monotonic()
        for inst in self.m.instances.values():
            lv = [inst.worker.name, inst.id]
            for st in State:
                status.add_metric([*lv, st.value], 1.0 if inst.state is st else 0.0)
            up.add_metric(lv, 1.0 if inst.state is State.RUNNING else 0.0)
            if inst.last_probe_ms is not None:
                resp.add_metric(lv, inst.last_probe_ms)
            load = inst.load
            conns.add_metric(lv, float(load.get("active", 0)))
            queue.add_metric(lv, float(load.get("queued", 0)))
            ok, failed = load.get("ok", 0), load.get("failed", 0)
            if ok + failed:
                rate.add_metric(lv, ok / (ok + failed))
            errors.add_metric(lv, float(failed))
            if inst.alive and inst.metrics:
                mem.add_metric(lv, float(inst.metrics.get("rss_mb", 0.0)))
                cpu.add_metric(lv, float(inst.metrics.get("cpu_percent", 0.0)))
            restarts.add_metric(lv, float(inst.restarts))
            if inst.last_heartbeat is not None and inst.alive:
                hb.add_metric(lv, round(now - inst.last_heartbeat, 3))
            for name, value in (load.get("stats") or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    stat.add_metric([*lv, str(name)], float(value))
        yield from (status, up, resp, conns, queue, rate, errors, mem, cpu, restarts, hb, stat)
        for collector in self.extra:
            yield from collector.collect()
