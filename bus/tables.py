"""The bus's own tables, added to each module's metadata so that each module's
database holds its own outbox, inbox and dead letters (never a shared one)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = ["add_bus_tables"]


def add_bus_tables(metadata: MetaData) -> None:
    """Declare ``outbox``, ``inbox`` and ``dead_letter`` on a module's metadata."""
    Table(
        "outbox",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("message_id", String, nullable=False, unique=True),
        Column("type", String, nullable=False),
        Column("version", Integer, nullable=False),
        Column("correlation_id", String, nullable=False),
        Column("causation_id", String),
        Column("source", String, nullable=False),
        Column("occurred_at", Float, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("context", LargeBinary),
        Column("traceparent", String),
        Column("tracestate", String),
        Column("dispatched_at", Float),
        sqlite_autoincrement=True,
    )
    # The relay's start-up scan reads only what is still undelivered.
    Index(
        "outbox_undispatched",
        metadata.tables["outbox"].c.seq,
        sqlite_where=text("dispatched_at IS NULL"),
    )
    # A message emitted outside any handler carries on its saga's context,
    # found from the last message emitted with one (see Tx.emit).
    Index(
        "outbox_context",
        metadata.tables["outbox"].c.correlation_id,
        metadata.tables["outbox"].c.seq,
        sqlite_where=text("context IS NOT NULL"),
    )
    # Retention prunes dispatched rows oldest first (bus/retention.py).
    Index(
        "outbox_dispatched",
        metadata.tables["outbox"].c.dispatched_at,
        sqlite_where=text("dispatched_at IS NOT NULL"),
    )
    Table(
        "inbox",
        metadata,
        Column("consumer", String, primary_key=True),
        Column("message_id", String, primary_key=True),
        Column("processed_at", Float, nullable=False),
        sqlite_with_rowid=False,
    )
    # Retention prunes processed ids oldest first (appended at the index's end).
    Index("inbox_processed_at", metadata.tables["inbox"].c.processed_at)
    # Messages a consumer could not handle: RETRYING (waiting for their next
    # attempt, or behind an earlier message of the same order), DEAD (given up
    # on: an operator replays or discards them), REPLAYED or DISCARDED.
    Table(
        "dead_letter",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("consumer", String, nullable=False),
        Column("message_id", String, nullable=False),
        Column("type", String, nullable=False),
        Column("version", Integer, nullable=False),
        Column("correlation_id", String, nullable=False),
        Column("causation_id", String),
        Column("source", String, nullable=False),
        Column("occurred_at", Float, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("context", LargeBinary),
        Column("traceparent", String),
        Column("tracestate", String),
        Column("status", String, nullable=False),
        Column("error", Text),
        Column("attempts", Integer, nullable=False),
        Column("first_failed_at", Float, nullable=False),
        Column("next_attempt_at", Float),
        Column("dead_at", Float),
        Column("resolved_at", Float),
        UniqueConstraint("consumer", "message_id", name="parked_once"),
        sqlite_autoincrement=True,
    )
    Index(
        "dead_letter_open",
        metadata.tables["dead_letter"].c.consumer,
        metadata.tables["dead_letter"].c.id,
        sqlite_where=text("status IN ('RETRYING', 'DEAD')"),
    )
    # The dead-letter gauges count rows by consumer and status at every scrape.
    Index(
        "dead_letter_by_status",
        metadata.tables["dead_letter"].c.consumer,
        metadata.tables["dead_letter"].c.status,
    )
