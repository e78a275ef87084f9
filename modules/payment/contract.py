"""The payment module's messages: the only thing other code may know of it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.messages import Command, Compensated, Event, Failure, Message

__all__ = [
    "MESSAGES",
    "CustomerUpdated",
    "PaymentCompleted",
    "PaymentFailed",
    "PaymentRefunded",
    "ProcessPayment",
    "RefundFailed",
    "RefundPayment",
]

Cents = Annotated[int, msgspec.Meta(ge=0)]


class ProcessPayment(Command, frozen=True, kw_only=True):
    """Asks payment to charge a customer's account for an order, at most once per order."""

    TYPE = "payment.ProcessPayment"
    order_id: str
    customer_id: str
    amount_cents: Cents


class PaymentCompleted(Event, frozen=True, kw_only=True):
    """Emitted when an order's amount has been taken from the customer's balance."""

    TYPE = "payment.PaymentCompleted"
    order_id: str
    customer_id: str
    amount_cents: Cents


class PaymentFailed(Failure, frozen=True, kw_only=True):
    """Emitted when an order could not be charged; nothing was taken.

    ``reason`` is ``insufficient_funds``, ``account_closed``, ``unknown_customer``,
    ``already_refunded`` (the order was compensated before the charge arrived)
    or ``injected_fault``.
    """

    TYPE = "payment.PaymentFailed"
    order_id: str
    customer_id: str
    amount_cents: Cents


class RefundPayment(Command, frozen=True, kw_only=True):
    """Asks payment to give back whatever was charged for an order (nothing, if nothing was)."""

    TYPE = "payment.RefundPayment"
    COMPENSATION = True
    order_id: str
    reason: str | None = None


class PaymentRefunded(Compensated, frozen=True, kw_only=True):
    """Emitted once per refunded order; ``amount_cents`` is 0 when nothing had been charged.

    ``reason`` repeats the refund request's reason.
    """

    TYPE = "payment.PaymentRefunded"
    order_id: str
    customer_id: str | None
    amount_cents: Cents


class RefundFailed(Failure, frozen=True, kw_only=True):
    """Emitted when a refund cannot be made now; nothing changed, and it may be asked again.

    ``reason`` is ``account_closed``: the money goes back once the account is open.
    """

    TYPE = "payment.RefundFailed"
    COMPENSATION = True
    order_id: str
    customer_id: str | None


class CustomerUpdated(Event, frozen=True, kw_only=True):
    """Emitted when a customer's payment account is opened or renamed."""

    TYPE = "payment.CustomerUpdated"
    KEY = "customer_id"
    customer_id: str
    name: str


MESSAGES: tuple[type[Message], ...] = (
    ProcessPayment,
    PaymentCompleted,
    PaymentFailed,
    RefundPayment,
    PaymentRefunded,
    RefundFailed,
    CustomerUpdated,
)
