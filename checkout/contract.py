"""Checkout's own messages: operator actions on a saga."""

from __future__ import annotations

from bus.messages import Command, Event, Message

__all__ = [
    "MESSAGES",
    "AbortSaga",
    "ResolveSaga",
    "RetrySaga",
    "SagaParked",
    "SagaResolved",
    "SagaResumed",
]


class RetrySaga(Command, frozen=True, kw_only=True):
    """An operator asks to send the saga's current step again, or to resume a parked one."""

    TYPE = "checkout.RetrySaga"
    order_id: str


class AbortSaga(Command, frozen=True, kw_only=True):
    """An operator (or a deadline) asks to compensate a running saga now.

    Refused (a no-op) once the saga has finished or is past its pivot; at the
    pivot, the pivot's lock decides which of the two wins.
    """

    TYPE = "checkout.AbortSaga"
    COMPENSATION = True
    order_id: str
    reason: str


class ResolveSaga(Command, frozen=True, kw_only=True):
    """An operator records that a parked compensation was done by hand, outside the system."""

    TYPE = "checkout.ResolveSaga"
    COMPENSATION = True
    order_id: str
    note: str


class SagaParked(Event, frozen=True, kw_only=True):
    """Emitted when a compensation has failed its every attempt: the saga waits for a person.

    Nothing is retried while it is parked; ``error`` is the compensation's last error.
    """

    TYPE = "checkout.SagaParked"
    COMPENSATION = True
    order_id: str
    step: str
    attempts: int
    error: str | None = None


class SagaResumed(Event, frozen=True, kw_only=True):
    """Emitted when an operator resumes a parked saga: its compensation is tried again."""

    TYPE = "checkout.SagaResumed"
    COMPENSATION = True
    order_id: str
    step: str


class SagaResolved(Event, frozen=True, kw_only=True):
    """Emitted when an operator resolves a parked saga by hand; the undo goes on from there."""

    TYPE = "checkout.SagaResolved"
    COMPENSATION = True
    order_id: str
    step: str
    note: str
    ended: bool = False  # nothing was left to undo: the saga is compensated


MESSAGES: tuple[type[Message], ...] = (
    RetrySaga, AbortSaga, ResolveSaga, SagaParked, SagaResumed, SagaResolved,
)  # fmt: skip
