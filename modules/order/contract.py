"""The order module's messages: the only thing other code may know of it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.messages import Command, Event, Failure, Message

__all__ = [
    "MESSAGES",
    "CancelOrder",
    "CancellationRequested",
    "CompleteOrder",
    "NoteCompensationPending",
    "OrderAddress",
    "OrderCancelled",
    "OrderCompleted",
    "OrderCreated",
    "OrderLine",
    "RecordCustomer",
    "RecordProduct",
    "RequestCancellation",
]

Cents = Annotated[int, msgspec.Meta(ge=0)]


class OrderLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of an order, priced when the order was placed."""

    sku: str
    quantity: Annotated[int, msgspec.Meta(gt=0)]
    unit_price_cents: Cents


class OrderAddress(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the order is to be shipped."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str


class OrderCreated(Event, frozen=True, kw_only=True):
    """Emitted once per accepted order, in the transaction that stores it as PENDING.

    It carries everything the rest of the checkout needs: who pays, how much,
    which lines to reserve and where to ship.
    """

    TYPE = "order.OrderCreated"
    order_id: str
    customer_id: str
    items: tuple[OrderLine, ...]
    total_cents: Cents
    shipping_address: OrderAddress


class CompleteOrder(Command, frozen=True, kw_only=True):
    """Asks the order module to mark a PENDING order COMPLETED: the saga's point of no return.

    Answered by ``OrderCompleted``, or by ``CancellationRequested`` when a
    cancellation got to the order first (the order's row is the lock both take).
    """

    TYPE = "order.CompleteOrder"
    order_id: str


class OrderCompleted(Event, frozen=True, kw_only=True):
    """Emitted once when an order becomes COMPLETED."""

    TYPE = "order.OrderCompleted"
    order_id: str


class RequestCancellation(Command, frozen=True, kw_only=True):
    """Asks the order module to stop the order from completing, so that it can be undone.

    Answered by ``CancellationRequested`` (the order will not complete; undo
    what was done) or by ``OrderCompleted`` (too late: it already completed).
    """

    TYPE = "order.RequestCancellation"
    COMPENSATION = True
    order_id: str
    reason: str


class CancellationRequested(Failure, frozen=True, kw_only=True):
    """Emitted when an order can no longer complete: a cancellation was accepted first.

    Emitted once when a customer, an operator or a timeout asks, and again for
    each later request or completion attempt. ``reason`` is why it was asked.
    """

    TYPE = "order.CancellationRequested"
    COMPENSATION = True
    order_id: str


class CancelOrder(Command, frozen=True, kw_only=True):
    """Asks the order module to cancel an order, recording why; cancelling twice is a no-op.

    The recorded reason is the cancellation request's, if one was accepted.
    """

    TYPE = "order.CancelOrder"
    COMPENSATION = True
    order_id: str
    reason: str


class OrderCancelled(Event, frozen=True, kw_only=True):
    """Emitted once when an order becomes CANCELLED, with the reason."""

    TYPE = "order.OrderCancelled"
    COMPENSATION = True
    order_id: str
    reason: str


class NoteCompensationPending(Command, frozen=True, kw_only=True):
    """Tells the order module that undoing its order waits for an operator, at ``step``.

    The order stays PENDING, with reason ``compensation pending: <step>``.
    """

    TYPE = "order.NoteCompensationPending"
    order_id: str
    step: str


class RecordProduct(Command, frozen=True, kw_only=True):
    """Keeps the order module's copy of the catalog (name and price of a sku) up to date."""

    TYPE = "order.RecordProduct"
    KEY = "sku"
    sku: str
    name: str
    price_cents: Cents


class RecordCustomer(Command, frozen=True, kw_only=True):
    """Keeps the order module's list of known customers up to date."""

    TYPE = "order.RecordCustomer"
    KEY = "customer_id"
    customer_id: str
    name: str


MESSAGES: tuple[type[Message], ...] = (
    OrderCreated,
    CompleteOrder,
    OrderCompleted,
    RequestCancellation,
    CancellationRequested,
    CancelOrder,
    OrderCancelled,
    NoteCompensationPending,
    RecordProduct,
    RecordCustomer,
)
