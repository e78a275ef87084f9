"""The fraud check's messages: the only thing other code may know of it."""

from __future__ import annotations

from bus.messages import Command, Compensated, Event, Failure, Message

__all__ = ["MESSAGES", "CheckFraud", "ClearanceRevoked", "FraudCleared", "FraudSuspected",
           "RevokeClearance"]  # fmt: skip


class CheckFraud(Command, frozen=True, kw_only=True):
    """Asks for a fraud check of an order's payment, at most once per order."""

    TYPE = "fraud.CheckFraud"
    order_id: str
    customer_id: str
    amount_cents: int


class FraudCleared(Event, frozen=True, kw_only=True):
    """Emitted when an order passed the check."""

    TYPE = "fraud.FraudCleared"
    order_id: str


class FraudSuspected(Failure, frozen=True, kw_only=True):
    """Emitted when an order looks fraudulent (``reason``: ``amount_too_high``), or was
    revoked before its check arrived (``already_revoked``)."""

    TYPE = "fraud.FraudSuspected"
    order_id: str


class RevokeClearance(Command, frozen=True, kw_only=True):
    """Asks to withdraw an order's clearance (nothing, if it was never cleared)."""

    TYPE = "fraud.RevokeClearance"
    COMPENSATION = True
    order_id: str
    reason: str


class ClearanceRevoked(Compensated, frozen=True, kw_only=True):
    """Emitted once an order's clearance is withdrawn, or found never given."""

    TYPE = "fraud.ClearanceRevoked"
    order_id: str


MESSAGES: tuple[type[Message], ...] = (
    CheckFraud, FraudCleared, FraudSuspected, RevokeClearance, ClearanceRevoked,
)  # fmt: skip
