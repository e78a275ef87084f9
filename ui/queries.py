"""What the dashboard shows, read straight from this process's SQLite files.

Every read is a few point or index queries on a read-only connection
(``Database.read_now``), so a page costs microseconds of SQLite and never
waits for a writer (WAL). The order itself is read from the saga's
``order.OrderCreated`` in checkout's timeline, not from the order module's
database: the dashboard then works wherever checkout runs, also when the
order module is another process (``--modules checkout`` over Kafka).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bus.sqlite import Database
from checkout.causality import causal_order

__all__ = [
    "NOT_STUCK",
    "STATUSES",
    "DeadLetter",
    "Entry",
    "Headline",
    "Order",
    "SagaLine",
    "dead_letters",
    "headline",
    "order_of",
    "saga_lines",
    "status_counts",
    "timeline",
]

TERMINAL = ("COMPLETED", "COMPENSATED")
# A parked saga waits for a person by design: it is listed as PARKED, never as stuck.
NOT_STUCK = (*TERMINAL, "PARKED")
# PARKED is listed before it exists so that the filter needs no change when it lands.
STATUSES = ("RUNNING", "COMPENSATING", "PARKED", "STUCK", "COMPLETED", "COMPENSATED")


@dataclass(frozen=True)
class SagaLine:
    order_id: str
    status: str
    step: str
    last_message: str
    style: str
    started_at: float
    updated_at: float
    stuck: bool

    @property
    def age(self) -> float:
        return time.time() - self.started_at


@dataclass(frozen=True)
class Entry:
    """One message of a saga's timeline."""

    message_id: str
    causation_id: str | None
    type: str
    kind: str
    source: str
    target: str | None
    compensation: bool
    at: float
    data: dict[str, Any]


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    lines: list[dict[str, Any]]
    total_cents: int
    address: dict[str, Any]
    status: str
    reason: str | None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    consumer: str
    status: str
    type: str
    order_id: str
    error: str | None
    attempts: int
    first_failed_at: float
    payload: str


@dataclass(frozen=True)
class Headline:
    in_flight: int
    parked: int
    outbox_backlog: int
    finished_last_minute: int
    dead_letters: int
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def sagas_per_second(self) -> float:
        return self.finished_last_minute / 60.0


def saga_lines(
    checkout: Database, status: str | None, *, stuck_after: float, limit: int = 200
) -> list[SagaLine]:
    """Newest first, filtered like ``GET /sagas?status=``; a saga with an orchestrator's
    row is orchestrated, the others were choreographed."""
    now = time.time()
    sql = (
        "SELECT t.saga_id, t.status, t.step, t.last_type, t.started_at, t.updated_at,"
        " s.saga_id IS NOT NULL FROM tracked_sagas t LEFT JOIN sagas s USING (saga_id)"
    )
    params: tuple[Any, ...] = ()
    if status == "STUCK":
        sql += " WHERE t.status NOT IN (?, ?, ?) AND t.started_at < ?"
        params = (*NOT_STUCK, now - stuck_after)
    elif status:
        sql += " WHERE t.status = ?"
        params = (status,)
    sql += " ORDER BY t.started_at DESC LIMIT ?"
    rows = checkout.read_now(lambda conn: conn.execute(sql, (*params, limit)).fetchall())
    return [
        SagaLine(
            order_id=r[0], status=r[1], step=r[2], last_message=r[3],
            style="orchestration" if r[6] else "choreography", started_at=r[4],
            updated_at=r[5], stuck=r[1] not in NOT_STUCK and now - r[4] > stuck_after,
        )
        for r in rows
    ]  # fmt: skip


def status_counts(checkout: Database, *, stuck_after: float) -> dict[str, int]:
    """Sagas per status, STUCK counted apart (a stuck saga is also RUNNING or COMPENSATING)."""

    def read(conn: sqlite3.Connection) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(conn.execute("SELECT status, count(*) FROM tracked_sagas GROUP BY status"))
        counts["STUCK"] = conn.execute(
            "SELECT count(*) FROM tracked_sagas WHERE status NOT IN (?, ?, ?) AND started_at < ?",
            (*NOT_STUCK, time.time() - stuck_after),
        ).fetchone()[0]
        return counts

    return checkout.read_now(read)


def timeline(checkout: Database, order_id: str) -> list[Entry]:
    rows = checkout.read_now(
        lambda conn: conn.execute(
            "SELECT message_id, causation_id, type, kind, source, target, compensation,"
            " occurred_at, payload FROM timeline WHERE saga_id = ?",
            (order_id,),
        ).fetchall()
    )
    entries = [
        Entry(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], json.loads(r[8])) for r in rows
    ]
    return causal_order(
        entries,
        message_id=lambda entry: entry.message_id,
        causation_id=lambda entry: entry.causation_id,
        at=lambda entry: entry.at,
    )


def order_of(entries: Sequence[Entry], status: str) -> Order | None:
    """The order as its saga saw it: created with, and how it ended (reason if cancelled)."""
    created = next((e.data for e in entries if e.type == "order.OrderCreated"), None)
    if created is None:
        return None
    cancelled = next((e.data for e in entries if e.type == "order.OrderCancelled"), None)
    aborted = next((e.data for e in entries if e.type == "checkout.AbortSaga"), None)
    reason = (cancelled or aborted or {}).get("reason")
    return Order(
        order_id=created["order_id"],
        customer_id=created["customer_id"],
        lines=list(created["items"]),
        total_cents=created["total_cents"],
        address=created["shipping_address"],
        status=status,
        reason=reason,
    )


def _dead_rows(consumer: str, status: str, limit: int, conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(
        "SELECT id, status, type, correlation_id, error, attempts, first_failed_at, payload"
        " FROM dead_letter WHERE consumer = ? AND (? = 'ALL' OR status = ?)"
        " ORDER BY id DESC LIMIT ?",
        (consumer, status, status, limit),
    ).fetchall()


def dead_letters(
    sources: Sequence[tuple[str, Database]], status: str, limit: int = 200
) -> list[DeadLetter]:
    """Dead letters of every consumer in this process, ids as the JSON API names them."""
    found: list[DeadLetter] = []
    for consumer, db in sources:
        found += [
            DeadLetter(
                id=f"{consumer}:{r[0]}", consumer=consumer, status=r[1], type=r[2],
                order_id=r[3], error=r[4], attempts=r[5], first_failed_at=r[6],
                payload=json.dumps(json.loads(r[7]), indent=2),
            )
            for r in db.read_now(partial(_dead_rows, consumer, status, limit))
        ]  # fmt: skip
    found.sort(key=lambda letter: letter.first_failed_at, reverse=True)
    return found[:limit]


def _dead_count(consumer: str, conn: sqlite3.Connection) -> int:
    count: int = conn.execute(
        "SELECT count(*) FROM dead_letter WHERE consumer = ? AND status = 'DEAD'", (consumer,)
    ).fetchone()[0]
    return count


def headline(
    checkout: Database, databases: Sequence[Database], dead: Sequence[tuple[str, Database]]
) -> Headline:
    """Sagas in flight, outbox backlog (every database of this process), sagas/s last minute."""

    def checkout_numbers(conn: sqlite3.Connection) -> tuple[int, int, int]:
        in_flight = conn.execute(
            "SELECT count(*) FROM tracked_sagas WHERE status NOT IN (?, ?)", TERMINAL
        ).fetchone()[0]
        parked = conn.execute(
            "SELECT count(*) FROM tracked_sagas WHERE status = 'PARKED'"
        ).fetchone()[0]
        finished = conn.execute(
            "SELECT count(*) FROM tracked_sagas WHERE status IN (?, ?) AND updated_at >= ?",
            (*TERMINAL, time.time() - 60.0),
        ).fetchone()[0]
        return in_flight, parked, finished

    def backlog(conn: sqlite3.Connection) -> int:
        count: int = conn.execute(
            "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
        ).fetchone()[0]
        return count

    in_flight, parked, finished = checkout.read_now(checkout_numbers)
    outbox = sum(db.read_now(backlog) for db in databases)
    dead_count = sum(db.read_now(partial(_dead_count, name)) for name, db in dead)
    return Headline(in_flight, parked, outbox, finished, dead_count)
