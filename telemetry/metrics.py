"""Prometheus metrics: what the code counts as it runs, and what is read from the
databases when scraped.

Counters and histograms live in one registry per process (``REGISTRY``) and
are moved by cheap calls on the hot path (label children are looked up once
and cached). The gauges that operators alert on (sagas in flight by status,
stuck sagas, outbox backlog, dead letters) are not kept in memory: a
``DatabaseCollector`` counts them in the SQLite files at each scrape, with
indexed counts, so they are exact across restarts and across processes.

Names follow the Prometheus conventions: ``_total`` for counters, base units
(seconds), a prefix per area (``saga_``, ``bus_``, ``sqlite_``, ``kafka_``),
and low-cardinality labels only (never an order or message id).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ENABLED",
    "REGISTRY",
    "DatabaseCollector",
    "committed",
    "configure",
    "duplicate_dropped",
    "handler_failed",
    "relayed",
    "render",
    "saga_parked",
    "saga_stuck",
    "saga_transition",
]

REGISTRY = CollectorRegistry()
"""This process's counters and histograms."""

TERMINAL = ("COMPLETED", "COMPENSATED")

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

_saga_counters = {
    outcome: Counter(
        f"saga_{outcome}", f"Sagas {outcome}, by saga style", ["style"], registry=REGISTRY
    )
    for outcome in ("started", "completed", "compensated", "parked", "stuck")
}
_step_seconds = Histogram(
    "saga_step_duration_seconds",
    "Time from a step's command (or triggering event) to its reply, by step and outcome",
    ["style", "step", "outcome"],
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
_saga_seconds = Histogram(
    "saga_duration_seconds",
    "Time from a saga's first message to its end, by outcome (completed, compensated)",
    ["style", "outcome"],
    buckets=_SAGA_BUCKETS,
    registry=REGISTRY,
)
_relay_seconds = Histogram(
    "bus_relay_publish_seconds",
    "Time from an outbox row's commit to the transport holding it durably",
    ["module"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
_duplicates = Counter(
    "bus_inbox_duplicates",
    "Messages a consumer received again and dropped (inbox)",
    ["consumer"],
    registry=REGISTRY,
)
_handler_errors = Counter(
    "bus_handler_errors",
    "Handler attempts that failed (the message was parked or retried)",
    ["consumer"],
    registry=REGISTRY,
)
_batch_size = Histogram(
    "sqlite_commit_batch_size",
    "Transactions (jobs) per group commit",
    ["database"],
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
_commit_seconds = Histogram(
    "sqlite_commit_seconds",
    "Time to run and commit one group of transactions",
    ["database"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)

_style = "orchestration"
_children: dict[tuple[object, ...], Any] = {}
_stuck_seen: set[str] = set()


ENABLED = True
"""Whether the hot-path hooks count (``--no-metrics`` turns them off; the gauges
read from the databases at scrape time stay)."""


def configure(*, style: str, enabled: bool = True) -> None:
    """The saga style this process runs (the ``style`` label); whether to count."""
    global ENABLED, _style
    _style = style
    ENABLED = enabled
    for counter in _saga_counters.values():
        _child(counter, style)  # present at 0 from the start, for rate() and alerts


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# -- hot-path hooks -------------------------------------------------------------


def committed(database: str, jobs: int, seconds: float) -> None:
    """One group commit of ``jobs`` transactions that took ``seconds``."""
    if not ENABLED:
        return
    _child(_batch_size, database).observe(jobs)
    _child(_commit_seconds, database).observe(seconds)


def relayed(module: str, latencies: Iterable[float]) -> None:
    """Outbox rows the transport now holds, each with its publish latency."""
    if not ENABLED:
        return
    histogram = _child(_relay_seconds, module)
    for seconds in latencies:
        histogram.observe(seconds)


def duplicate_dropped(consumer: str) -> None:
    if not ENABLED:
        return
    _child(_duplicates, consumer).inc()


def handler_failed(consumer: str) -> None:
    if not ENABLED:
        return
    _child(_handler_errors, consumer).inc()


def saga_transition(
    before: Sequence[Any] | None, status: str, step: str, started_at: float, now: float
) -> None:
    """A saga moved (the tracker's view): count it and time the step it left.

    ``before`` is ``(status, step, started_at, updated_at)`` as the tracker had
    it (None for a new saga); ``started_at`` is the saga's start. The step
    left behind took from its last message (its command, or in choreography
    the event that triggered it) until now; its outcome is ``succeeded``,
    ``failed`` (the saga turns to compensating), ``compensated`` (an undo
    finished) or ``parked``.
    """
    if not ENABLED:
        return
    if before is None:
        _child(_saga_counters["started"], _style).inc()
    else:
        old_status, old_step, started_at, since = before[0], before[1], before[2], before[3]
        if old_status == status and old_step == step:
            return
        if status == "PARKED":
            outcome = "parked"
        elif old_status == "COMPENSATING":
            outcome = "compensated"
        elif status in ("COMPENSATING", "COMPENSATED"):
            outcome = "failed"
        else:
            outcome = "succeeded"
        if old_step:
            _child(_step_seconds, _style, old_step, outcome).observe(max(0.0, now - since))
        if old_status == status:
            return
    if status == "COMPLETED":
        _child(_saga_counters["completed"], _style).inc()
        _child(_saga_seconds, _style, "completed").observe(max(0.0, now - started_at))
    elif status == "COMPENSATED":
        _child(_saga_counters["compensated"], _style).inc()
        _child(_saga_seconds, _style, "compensated").observe(max(0.0, now - started_at))
    elif status == "PARKED":
        saga_parked()


def saga_parked() -> None:
    """A saga parked. The tracker sees it in orchestration; in choreography the watchdog
    parks the tracker's own row, so it calls this itself."""
    if not ENABLED:
        return
    _child(_saga_counters["parked"], _style).inc()


def saga_stuck(saga_id: str) -> None:
    """A saga was found stuck; counted once per saga (per process)."""
    if not ENABLED:
        return
    if saga_id in _stuck_seen:
        return
    if len(_stuck_seen) > 100_000:
        _stuck_seen.clear()
    _stuck_seen.add(saga_id)
    _child(_saga_counters["stuck"], _style).inc()


# -- read at scrape time --------------------------------------------------------


def _read(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _statuses(conn: sqlite3.Connection) -> Iterator[str]:
    """The distinct saga statuses, by skipping along the status index."""
    row = conn.execute("SELECT min(status) FROM tracked_sagas").fetchone()
    while row is not None and row[0] is not None:
        yield row[0]
        row = conn.execute(
            "SELECT min(status) FROM tracked_sagas WHERE status > ?", (row[0],)
        ).fetchone()


class DatabaseCollector(Collector):
    """Gauges counted in the module databases at each scrape.

    ``modules`` maps each module this process runs to its SQLite file (for the
    outbox backlog and dead letters); ``checkout`` is checkout's file, if this
    process runs it (for sagas in flight and stuck); ``kafka_lag`` returns the
    consumer lag per (group, topic, partition) when the Kafka bus is used, and
    ``local_lag`` the rows per (subscription, source) with the local bus.
    """

    def __init__(
        self,
        modules: Mapping[str, Path],
        *,
        checkout: Path | None = None,
        stuck_after: float = 60.0,
        kafka_lag: Callable[[], Mapping[tuple[str, str, int], int]] | None = None,
        local_lag: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self.modules = dict(modules)
        self.checkout = checkout
        self.stuck_after = stuck_after
        self.kafka_lag = kafka_lag
        self.local_lag = local_lag

    def collect(self) -> Iterable[Metric]:
        backlog = GaugeMetricFamily(
            "bus_outbox_backlog", "Outbox rows not yet handed to the transport", labels=["module"]
        )
        dead = GaugeMetricFamily(
            "bus_dead_letters",
            "Parked messages by consumer and status (RETRYING, DEAD, DELIVERED, DISCARDED)",
            labels=["consumer", "status"],
        )
        for module, path in self.modules.items():
            if not path.exists():
                continue
            with closing(_read(path)) as conn:
                (count,) = conn.execute(
                    "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
                ).fetchone()
                backlog.add_metric([module], count)
                for consumer, status, n in conn.execute(
                    "SELECT consumer, status, count(*) FROM dead_letter GROUP BY consumer, status"
                ):
                    dead.add_metric([consumer, status], n)
        yield backlog
        yield dead
        if self.checkout is not None and self.checkout.exists():
            yield from self._sagas(self.checkout)
        if self.kafka_lag is not None:
            lag = GaugeMetricFamily(
                "kafka_consumer_lag",
                "Records behind the end of the partition after the last committed batch",
                labels=["group", "topic", "partition"],
            )
            for (group, topic, partition), records in sorted(self.kafka_lag().items()):
                lag.add_metric([group, topic, str(partition)], records)
            yield lag
        if self.local_lag is not None:
            rows = GaugeMetricFamily(
                "bus_local_lag",
                "Outbox rows of a source past a subscription's position (the local bus;"
                " rows of every type, so an upper bound)",
                labels=["subscription", "source"],
            )
            for (subscription, source), behind in sorted(self.local_lag().items()):
                rows.add_metric([subscription, source], behind)
            yield rows

    def _sagas(self, path: Path) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "saga_in_flight", "Sagas not yet finished, by status", labels=["status"]
        )
        stuck = GaugeMetricFamily(
            "saga_stuck",
            "Sagas not finished within --stuck-after seconds of their start, now",
        )
        stuck_count = 0
        before = time.time() - self.stuck_after
        with closing(_read(path)) as conn:
            statuses = {s for s in _statuses(conn) if s not in TERMINAL}
            for status in sorted(statuses | {"RUNNING", "COMPENSATING"}):
                (count,) = conn.execute(
                    "SELECT count(*) FROM tracked_sagas WHERE status = ?", (status,)
                ).fetchone()
                in_flight.add_metric([status], count)
                (late,) = conn.execute(
                    "SELECT count(*) FROM tracked_sagas WHERE status = ? AND started_at < ?",
                    (status, before),
                ).fetchone()
                stuck_count += late
        stuck.add_metric([], stuck_count)
        yield in_flight
        yield stuck


class _ProcessMetrics(Collector):
    """The process-wide counters and histograms, inside an app's own registry."""

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()


def app_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry for one app's ``/metrics``: the process's metrics plus ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of a registry."""
    return generate_latest(registry)
