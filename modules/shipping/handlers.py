"""The shipping module's handlers: each runs inside one local transaction."""

from __future__ import annotations

import uuid

import msgspec

from bus.sqlite import Tx
from modules.faults import StepFaults
from modules.shipping.contract import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from modules.shipping.domain import FailureReason, ShipmentStatus

__all__ = ["cancel_shipment", "schedule_shipment"]


def schedule_shipment(
    tx: Tx, command: ScheduleShipment, countries: frozenset[str], faults: StepFaults
) -> None:
    """Schedule one shipment per order; a repeat gets the first outcome again."""
    order_id = command.order_id
    row = tx.one(
        "SELECT status, reason, shipment_id, country FROM shipments WHERE order_id = ?", (order_id,)
    )
    if row is not None:
        status = ShipmentStatus(row[0])
        if status is ShipmentStatus.SCHEDULED:
            tx.emit(ShipmentScheduled(order_id=order_id, shipment_id=row[2], country=row[3]))
        else:
            reason = row[1] if status is ShipmentStatus.FAILED else FailureReason.ALREADY_CANCELLED
            tx.emit(ShipmentFailed(order_id=order_id, reason=reason))
        return
    country = command.destination.country
    failure: FailureReason | None = None
    if faults.fails(order_id):
        failure = FailureReason.INJECTED_FAULT
    elif country not in countries:
        failure = FailureReason.COUNTRY_NOT_SERVED
    shipment_id = None if failure else str(uuid.uuid4())
    tx.execute(
        "INSERT INTO shipments (order_id, shipment_id, status, reason, country, destination,"
        " lines, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            order_id,
            shipment_id,
            ShipmentStatus.FAILED if failure else ShipmentStatus.SCHEDULED,
            failure,
            country,
            msgspec.json.encode(command.destination).decode(),
            msgspec.json.encode(command.lines).decode(),
            tx.now,
            tx.now,
        ),
    )
    if failure is not None or shipment_id is None:
        tx.emit(ShipmentFailed(order_id=order_id, reason=failure or ""))
        return
    tx.emit(ShipmentScheduled(order_id=order_id, shipment_id=shipment_id, country=country))


def cancel_shipment(tx: Tx, command: CancelShipment) -> None:
    """Cancel the order's shipment, once; with none scheduled, void the order's shipping."""
    order_id = command.order_id
    row = tx.one(
        "SELECT status, shipment_id, country FROM shipments WHERE order_id = ?", (order_id,)
    )
    if row is None:
        tx.execute(
            "INSERT INTO shipments (order_id, status, created_at, updated_at) VALUES (?,?,?,?)",
            (order_id, ShipmentStatus.VOIDED, tx.now, tx.now),
        )
    elif ShipmentStatus(row[0]) is ShipmentStatus.SCHEDULED:
        tx.execute(
            "UPDATE shipments SET status = ?, updated_at = ? WHERE order_id = ?",
            (ShipmentStatus.CANCELLED, tx.now, order_id),
        )
    tx.emit(ShipmentCancelled(order_id=order_id, reason=command.reason))
