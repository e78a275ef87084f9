"""The envelope's mapping to a table row and to Kafka headers, declared once: every field
survives both ways, the trace context included, and older databases are upgraded."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import fields
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from bus.messages import (
    ENVELOPE_COLUMNS,
    Envelope,
    MessageRegistry,
    Undecodable,
    envelope_from_headers,
    envelope_from_row,
    envelope_headers,
    envelope_row,
)
from bus.sqlite import Database
from bus.tables import add_bus_tables
from tests.test_bus import Ping

pytestmark = pytest.mark.anyio

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

REGISTRY = MessageRegistry.from_contracts([Ping])


def envelope(**changes: object) -> Envelope:
    message = Ping(order_id="o1", n=3)
    values: dict[str, object] = {
        "message_id": "m1",
        "type": Ping.TYPE,
        "version": 1,
        "correlation_id": "o1",
        "causation_id": "c0",
        "source": "order",
        "occurred_at": 1234.5678901234,
        "payload": b'{"order_id":"o1","n":3}',
        "message": message,
        "context": b'{"k":1}',
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
    }
    values.update(changes)
    return Envelope(**values)  # type: ignore[arg-type]


def test_every_envelope_field_but_the_decoded_message_and_where_it_was_read_is_a_column() -> None:
    where = {"seq", "partition"}  # its outbox row, its Kafka partition
    assert set(ENVELOPE_COLUMNS) == {f.name for f in fields(Envelope)} - {"message", *where}


@pytest.mark.parametrize(
    "changes",
    [{}, {"causation_id": None, "context": None, "traceparent": None, "tracestate": None}],
    ids=["every-field", "nullable-fields-empty"],
)
def test_an_envelope_survives_a_row_and_kafka_headers(changes: dict[str, object]) -> None:
    original = envelope(**changes)

    from_row = envelope_from_row(envelope_row(original), REGISTRY)
    from_headers = envelope_from_headers(
        envelope_headers(original), original.correlation_id, original.payload, REGISTRY
    )

    assert from_row == original
    assert from_headers == original
    assert ("traceparent", TRACEPARENT.encode()) in envelope_headers(envelope()), "W3C name"


def test_a_payload_this_build_cannot_read_becomes_undecodable_either_way() -> None:
    bad = envelope(type="test.Unknown")
    assert isinstance(envelope_from_row(envelope_row(bad), REGISTRY).message, Undecodable)
    decoded = envelope_from_headers(envelope_headers(bad), "o1", bad.payload, REGISTRY)
    assert isinstance(decoded.message, Undecodable)


async def test_a_database_from_before_the_trace_context_gets_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    columns = ", ".join(c for c in ENVELOPE_COLUMNS if c not in ("traceparent", "tracestate"))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            f"CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, {columns},"
            " dispatched_at FLOAT)"
        )
        conn.execute(
            f"CREATE TABLE dead_letter (id INTEGER PRIMARY KEY AUTOINCREMENT, consumer, {columns},"
            " status, error, attempts, first_failed_at, next_attempt_at, dead_at, resolved_at)"
        )
        conn.commit()
    metadata = MetaData()
    add_bus_tables(metadata)

    async with Database(path, "old", metadata) as db:
        sent = await db.transact(lambda tx: tx.emit(Ping(order_id="o1", n=1)))

    with closing(sqlite3.connect(path)) as conn:
        for table in ("outbox", "dead_letter"):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            assert {"traceparent", "tracestate"} <= have
        row = conn.execute(f"SELECT {', '.join(ENVELOPE_COLUMNS)} FROM outbox").fetchone()
    assert envelope_from_row(row, REGISTRY) == sent
