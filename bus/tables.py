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
        Column("dispatched_at", Float),
        sqlite_autoincrement=True,
    )
    # The relay's start-up scan reads only what is still undelivered.
    Index(
        "outbox_undispatched",
        metadata.tables["outbox"].c.seq,
        sqlite_where=text("dispatched_at IS NULL"),
    )
    Table(
        "inbox",
        metadata,
        Column("consumer", String, primary_key=True),
        Column("message_id", String, primary_key=True),
        Column("processed_at", Float, nullable=False),
        sqlite_with_rowid=False,
    )
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
        Column("error", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("first_failed_at", Float, nullable=False),
        Column("dead_at", Float, nullable=False),
        Column("status", String, nullable=False, server_default="DEAD"),
    )
