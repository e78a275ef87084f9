"""Checkout's own tables: saga state (orchestration) and the tracker's history (both modes)."""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.tables import add_bus_tables

__all__ = [
    "TRACE_COLUMNS",
    "CheckoutBase",
    "SagaRow",
    "SagaTrace",
    "SettingRow",
    "TimelineRow",
    "TrackedSagaRow",
]


# A saga in one of these states never moves again: its rows may be pruned.
FINISHED = "status IN ('COMPLETED', 'COMPENSATED')"


class CheckoutBase(SQLModel, registry=registry()):
    pass


class SagaTrace(CheckoutBase):
    """Where a saga's trace goes on: the W3C context of the span that started it (None
    while tracing is off). What its timers, the watchdog and operators emit is a child of
    it, so it stays in the order's trace (``telemetry.tracing.saga_moved``)."""

    traceparent: str | None = None
    tracestate: str | None = None


# The trace context's columns, in the order of ``telemetry.tracing.TraceContext``.
TRACE_COLUMNS = ", ".join(SagaTrace.model_fields)


class SagaRow(SagaTrace, table=True):
    """The orchestrator's state of one saga, with an optimistic version."""

    __tablename__ = "sagas"
    # Retention finds finished sagas oldest first (checkout/retention.py).
    __table_args__ = (Index("sagas_finished", "updated_at", sqlite_where=text(FINISHED)),)

    saga_id: str = Field(primary_key=True)
    status: str = Field(index=True)
    step: str
    state: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # When the awaited reply times out, and when the whole saga does (durable timers).
    deadline: float = Field(index=True)
    expires_at: float
    version: int
    definition_version: int
    created_at: float
    updated_at: float


class TimelineRow(CheckoutBase, table=True):
    """One message of one saga, as the tracker saw it: the audit trail."""

    __tablename__ = "timeline"
    __table_args__ = (Index("timeline_by_saga", "saga_id", "occurred_at"),)

    message_id: str = Field(primary_key=True)
    saga_id: str
    type: str
    version: int
    kind: str
    source: str
    target: str | None = None
    compensation: bool
    causation_id: str | None = None
    occurred_at: float
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    context: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class TrackedSagaRow(SagaTrace, table=True):
    """The tracker's view of a saga, the same in both saga modes."""

    __tablename__ = "tracked_sagas"
    __table_args__ = (Index("tracked_sagas_finished", "updated_at", sqlite_where=text(FINISHED)),)

    saga_id: str = Field(primary_key=True)
    status: str = Field(index=True)
    step: str
    last_type: str
    # The event that drives the saga's next move, and when to nudge it again
    # (choreography's step timeouts; orchestration keeps its own timers).
    last_event_id: str | None = None
    attempt: int = 1
    deadline: float | None = Field(default=None, index=True)
    # The saga definition version it runs under (from its context in choreography).
    definition_version: int | None = None
    started_at: float
    updated_at: float


add_bus_tables(CheckoutBase.metadata)


class SettingRow(CheckoutBase, table=True):
    """Facts about how this data directory is run (the saga mode)."""

    __tablename__ = "system_settings"

    key: str = Field(primary_key=True)
    value: str
