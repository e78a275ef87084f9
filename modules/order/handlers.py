"""The order module's handlers: each runs inside one local transaction."""

from __future__ import annotations

import msgspec

from bus.sqlite import Tx
from modules.order.contract import (
    CancellationRequested,
    CancelOrder,
    CompleteOrder,
    NoteCompensationPending,
    OrderAddress,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderLine,
    RecordCustomer,
    RecordProduct,
    RequestCancellation,
)
from modules.order.domain import (
    IdempotencyConflictError,
    NewOrder,
    OrderNotFoundError,
    OrderStatus,
    UnknownCustomerError,
    price_lines,
)

__all__ = [
    "cancel_by_customer",
    "cancel_order",
    "complete_order",
    "note_compensation_pending",
    "place_order",
    "record_customer",
    "record_product",
    "request_cancellation",
    "take_lock",
]


def place_order(tx: Tx, order: NewOrder) -> tuple[str, OrderStatus]:
    """Store a PENDING order and emit OrderCreated; return the order's id and status.

    A repeated Idempotency-Key with the same request returns the first order.
    """
    if order.idempotency_key is not None:
        row = tx.one(
            "SELECT order_id, request_hash, status FROM orders WHERE idempotency_key = ?",
            (order.idempotency_key,),
        )
        if row is not None:
            if row[1] != order.fingerprint:
                raise IdempotencyConflictError(order.idempotency_key)
            return str(row[0]), OrderStatus(row[2])
    if tx.one("SELECT 1 FROM customers WHERE customer_id = ?", (order.customer_id,)) is None:
        raise UnknownCustomerError(order.customer_id)
    skus = sorted({sku for sku, _ in order.items})
    marks = ",".join("?" * len(skus))
    prices = dict(tx.execute(f"SELECT sku, price_cents FROM catalog WHERE sku IN ({marks})", skus))  # noqa: S608 - placeholders only
    lines, total = price_lines(order.items, prices)
    address = OrderAddress(**order.address)
    tx.execute(
        "INSERT INTO orders (order_id, customer_id, status, total_cents, shipping_address,"
        " idempotency_key, request_hash, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            order.order_id,
            order.customer_id,
            OrderStatus.PENDING,
            total,
            msgspec.json.encode(address).decode(),
            order.idempotency_key,
            order.fingerprint,
            tx.now,
            tx.now,
        ),
    )
    tx.conn.executemany(
        "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents)"
        " VALUES (?,?,?,?,?)",
        [
            (order.order_id, n, line.sku, line.quantity, line.unit_price_cents)
            for n, line in enumerate(lines)
        ],
    )
    tx.emit(
        OrderCreated(
            order_id=order.order_id,
            customer_id=order.customer_id,
            items=tuple(
                OrderLine(sku=p.sku, quantity=p.quantity, unit_price_cents=p.unit_price_cents)
                for p in lines
            ),
            total_cents=total,
            shipping_address=address,
        )
    )
    return order.order_id, OrderStatus.PENDING


def _status(tx: Tx, order_id: str) -> tuple[OrderStatus, str | None, str | None]:
    row = tx.one("SELECT status, reason, cancel_reason FROM orders WHERE order_id = ?", (order_id,))
    if row is None:
        raise OrderNotFoundError(order_id)
    return OrderStatus(row[0]), row[1], row[2]


def _cannot_complete(tx: Tx, order_id: str, reason: str) -> None:
    tx.emit(CancellationRequested(order_id=order_id, reason=reason))


def complete_order(tx: Tx, command: CompleteOrder) -> None:
    """Complete the order unless a cancellation was accepted first (then say so)."""
    order_id = command.order_id
    status, reason, cancel_reason = _status(tx, order_id)
    if status is OrderStatus.PENDING and cancel_reason is None:
        tx.execute(
            "UPDATE orders SET status = ?, updated_at = ? WHERE order_id = ?",
            (OrderStatus.COMPLETED, tx.now, order_id),
        )
        status = OrderStatus.COMPLETED
    if status is OrderStatus.COMPLETED:
        tx.emit(OrderCompleted(order_id=order_id))
    else:
        _cannot_complete(tx, order_id, cancel_reason or reason or "cancelled")


def request_cancellation(tx: Tx, command: RequestCancellation) -> None:
    """Take the order's lock against completing, once; answer with what is true now."""
    take_lock(tx, command.order_id, command.reason)


def take_lock(tx: Tx, order_id: str, reason: str) -> OrderStatus:
    """Stop the order from completing, unless it already did; return its status before.

    The order's row is the semantic lock that the saga's pivot (``complete_order``)
    takes too: whichever commits first wins, and the other learns it here.
    """
    status, old_reason, cancel_reason = _status(tx, order_id)
    if status is OrderStatus.COMPLETED:
        tx.emit(OrderCompleted(order_id=order_id))
        return status
    if status is OrderStatus.PENDING and cancel_reason is None:
        tx.execute(
            "UPDATE orders SET cancel_reason = ?, updated_at = ? WHERE order_id = ?",
            (reason, tx.now, order_id),
        )
        cancel_reason = reason
    _cannot_complete(tx, order_id, cancel_reason or old_reason or reason)
    return status


def cancel_by_customer(tx: Tx, order_id: str, reason: str) -> OrderStatus:
    """A customer's cancellation: take the lock unless it is taken; return the status before.

    PENDING means accepted (now, or by an earlier request): the saga undoes the
    order. COMPLETED means too late; CANCELLED, already done.
    """
    status, _, cancel_reason = _status(tx, order_id)
    if status is not OrderStatus.PENDING or cancel_reason is not None:
        return status  # finished, or asked before: nobody waits for an answer
    return take_lock(tx, order_id, reason)


def note_compensation_pending(tx: Tx, command: NoteCompensationPending) -> None:
    """Tell the customer the truth while an undo waits for a person: still PENDING, and why."""
    tx.execute(
        "UPDATE orders SET reason = ?, updated_at = ? WHERE order_id = ? AND status = ?",
        (f"compensation pending: {command.step}", tx.now, command.order_id, OrderStatus.PENDING),
    )


def cancel_order(tx: Tx, command: CancelOrder) -> None:
    """Cancel the order, with the accepted cancellation's reason if there was one."""
    order_id = command.order_id
    status, reason, cancel_reason = _status(tx, order_id)
    if status is OrderStatus.PENDING:
        reason = cancel_reason or command.reason
        tx.execute(
            "UPDATE orders SET status = ?, reason = ?, updated_at = ? WHERE order_id = ?",
            (OrderStatus.CANCELLED, reason, tx.now, order_id),
        )
        status = OrderStatus.CANCELLED
    # A repeated request gets the answer that is true now, so that a saga
    # waiting on it can always move on.
    if status is OrderStatus.COMPLETED:
        tx.emit(OrderCompleted(order_id=order_id))
    else:
        tx.emit(OrderCancelled(order_id=order_id, reason=reason or ""))


def record_product(tx: Tx, command: RecordProduct) -> None:
    tx.execute(
        "INSERT INTO catalog (sku, name, price_cents) VALUES (?,?,?) ON CONFLICT (sku)"
        " DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents",
        (command.sku, command.name, command.price_cents),
    )


def record_customer(tx: Tx, command: RecordCustomer) -> None:
    tx.execute(
        "INSERT INTO customers (customer_id, name) VALUES (?,?) ON CONFLICT (customer_id)"
        " DO UPDATE SET name = excluded.name",
        (command.customer_id, command.name),
    )
