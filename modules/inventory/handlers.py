"""The inventory module's handlers: each runs inside one local transaction."""

from __future__ import annotations

from bus.sqlite import Tx
from modules.faults import StepFaults
from modules.inventory.contract import (
    ProductUpdated,
    ReleaseStock,
    ReserveStock,
    StockFailed,
    StockLine,
    StockReleased,
    StockReserved,
)
from modules.inventory.domain import FailureReason, ReservationStatus, merge_lines, shortfall

__all__ = ["release_stock", "reserve_stock", "upsert_product"]


def _held_lines(tx: Tx, order_id: str) -> tuple[StockLine, ...]:
    rows = tx.execute(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = ? ORDER BY rowid", (order_id,)
    )
    return tuple(StockLine(sku=sku, quantity=quantity) for sku, quantity in rows)


def _record(
    tx: Tx, order_id: str, status: ReservationStatus, reason: str | None, sku: str | None
) -> None:
    tx.execute(
        "INSERT INTO reservations (order_id, status, reason, sku, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?)",
        (order_id, status, reason, sku, tx.now, tx.now),
    )


def reserve_stock(tx: Tx, command: ReserveStock, faults: StepFaults) -> None:
    """Hold every line of the order, all or nothing, once; a repeat gets the first outcome."""
    order_id = command.order_id
    row = tx.one("SELECT status, reason, sku FROM reservations WHERE order_id = ?", (order_id,))
    if row is not None:
        status = ReservationStatus(row[0])
        if status is ReservationStatus.RESERVED:
            tx.emit(StockReserved(order_id=order_id, lines=_held_lines(tx, order_id)))
        elif status is ReservationStatus.FAILED:
            tx.emit(StockFailed(order_id=order_id, reason=row[1], sku=row[2]))
        else:
            tx.emit(StockFailed(order_id=order_id, reason=FailureReason.ALREADY_RELEASED))
        return
    wanted = merge_lines((line.sku, line.quantity) for line in command.lines)
    marks = ",".join("?" * len(wanted))
    available = dict(
        tx.execute(f"SELECT sku, stock FROM products WHERE sku IN ({marks})", list(wanted))  # noqa: S608 - placeholders only
    )
    failure: tuple[FailureReason, str | None] | None = (
        (FailureReason.INJECTED_FAULT, None)
        if faults.fails(order_id)
        else shortfall(wanted, available)
    )
    if failure is not None:
        _record(tx, order_id, ReservationStatus.FAILED, failure[0], failure[1])
        tx.emit(StockFailed(order_id=order_id, reason=failure[0], sku=failure[1]))
        return
    # One writer per database and the check above in the same transaction:
    # nothing can take these units in between. The CHECK constraint on stock
    # is the backstop that turns a logic error into a rollback, not an oversell.
    tx.conn.executemany(
        "UPDATE products SET stock = stock - ? WHERE sku = ?",
        [(quantity, sku) for sku, quantity in wanted.items()],
    )
    _record(tx, order_id, ReservationStatus.RESERVED, None, None)
    tx.conn.executemany(
        "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES (?,?,?)",
        [(order_id, sku, quantity) for sku, quantity in wanted.items()],
    )
    lines = tuple(StockLine(sku=sku, quantity=quantity) for sku, quantity in wanted.items())
    tx.emit(StockReserved(order_id=order_id, lines=lines))


def release_stock(tx: Tx, command: ReleaseStock) -> None:
    """Put the order's held units back on sale, once; with nothing held, void the order's hold."""
    order_id = command.order_id
    row = tx.one("SELECT status FROM reservations WHERE order_id = ?", (order_id,))
    if row is None:
        _record(tx, order_id, ReservationStatus.VOIDED, None, None)
        tx.emit(StockReleased(order_id=order_id, lines=(), reason=command.reason))
        return
    status = ReservationStatus(row[0])
    lines = _held_lines(tx, order_id)
    if status is ReservationStatus.RESERVED:
        tx.conn.executemany(
            "UPDATE products SET stock = stock + ? WHERE sku = ?",
            [(line.quantity, line.sku) for line in lines],
        )
        tx.execute(
            "UPDATE reservations SET status = ?, updated_at = ? WHERE order_id = ?",
            (ReservationStatus.RELEASED, tx.now, order_id),
        )
        status = ReservationStatus.RELEASED
    released = lines if status is ReservationStatus.RELEASED else ()
    tx.emit(StockReleased(order_id=order_id, lines=released, reason=command.reason))


def upsert_product(tx: Tx, sku: str, name: str, price_cents: int, stock: int) -> ProductUpdated:
    """Create a product or set its name, price and sellable stock."""
    tx.execute(
        "INSERT INTO products (sku, name, price_cents, stock) VALUES (?,?,?,?)"
        " ON CONFLICT (sku) DO UPDATE SET name = excluded.name,"
        " price_cents = excluded.price_cents, stock = excluded.stock",
        (sku, name, price_cents, stock),
    )
    event = ProductUpdated(sku=sku, name=name, price_cents=price_cents)
    tx.emit(event)
    return event
