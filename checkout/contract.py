"""Checkout's own messages: operator actions on a saga, and the abort that choreography follows."""

from __future__ import annotations

from bus.messages import Command, Event, Message

__all__ = ["MESSAGES", "AbortSaga", "RetrySaga", "SagaAborted"]


class RetrySaga(Command, frozen=True, kw_only=True):
    """An operator asks to send the saga's current step again (a no-op once it has finished)."""

    TYPE = "checkout.RetrySaga"
    order_id: str


class AbortSaga(Command, frozen=True, kw_only=True):
    """An operator (or a deadline) asks to compensate a running saga now.

    Refused (a no-op) once the saga has finished or is past its point of no
    return (the shipment is scheduled).
    """

    TYPE = "checkout.AbortSaga"
    COMPENSATION = True
    order_id: str
    reason: str


class SagaAborted(Event, frozen=True, kw_only=True):
    """Emitted in choreography when a saga is aborted: every step undoes itself, last first."""

    TYPE = "checkout.SagaAborted"
    COMPENSATION = True
    order_id: str
    reason: str


MESSAGES: tuple[type[Message], ...] = (RetrySaga, AbortSaga, SagaAborted)
