"""Checkout's own messages: operator actions on a saga."""

from __future__ import annotations

from bus.messages import Command, Message

__all__ = ["MESSAGES", "AbortSaga", "RetrySaga"]


class RetrySaga(Command, frozen=True, kw_only=True):
    """An operator asks to send the saga's current step again (a no-op once it has finished)."""

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


MESSAGES: tuple[type[Message], ...] = (RetrySaga, AbortSaga)
