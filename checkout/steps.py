"""The checkout saga, declared as data: each step's command, its replies and its undo.

Order: create order → process payment → reserve stock → schedule shipment →
complete order. A step that fails did nothing (every participant promises
that), so only the steps before it are compensated, in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bus.messages import Command
from modules import inventory, order, payment, shipping

__all__ = ["DEFINITION_VERSION", "STEPS", "Step", "step_named"]

DEFINITION_VERSION = 1


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of the saga and the one that undoes it.

    Attributes:
        name: stable name, stored in saga state.
        module: the module that runs it.
        command: the wire type of the step's command.
        action: builds the step's command from the order; None for the first
            step, which the order module has already done when the saga starts.
        succeeded: the reply type that completes the step.
        failed: the reply types that mean the step did nothing and the saga must
            compensate (with the reply's ``reason``).
        undo: the wire type of the command that undoes the step.
        compensation: builds the command that undoes the step; None when there
            is nothing to undo.
        compensated: the reply type that confirms the undo.
    """

    name: str
    module: str
    command: str | None
    action: Callable[[order.OrderCreated], Command] | None
    succeeded: str
    failed: frozenset[str]
    undo: str | None
    compensation: Callable[[order.OrderCreated, str], Command] | None
    compensated: str | None


def _stock_lines(created: order.OrderCreated) -> tuple[inventory.StockLine, ...]:
    return tuple(inventory.StockLine(sku=i.sku, quantity=i.quantity) for i in created.items)


def _destination(created: order.OrderCreated) -> shipping.Destination:
    a = created.shipping_address
    return shipping.Destination(
        name=a.name, line1=a.line1, city=a.city, postal_code=a.postal_code, country=a.country
    )


STEPS: tuple[Step, ...] = (
    Step(
        name="order",
        module="order",
        command=None,
        action=None,
        succeeded=order.OrderCreated.TYPE,
        failed=frozenset(),
        undo=order.CancelOrder.TYPE,
        compensation=lambda o, reason: order.CancelOrder(order_id=o.order_id, reason=reason),
        compensated=order.OrderCancelled.TYPE,
    ),
    Step(
        name="payment",
        module="payment",
        command=payment.ProcessPayment.TYPE,
        action=lambda o: payment.ProcessPayment(
            order_id=o.order_id, customer_id=o.customer_id, amount_cents=o.total_cents
        ),
        succeeded=payment.PaymentCompleted.TYPE,
        failed=frozenset({payment.PaymentFailed.TYPE}),
        undo=payment.RefundPayment.TYPE,
        compensation=lambda o, why: payment.RefundPayment(order_id=o.order_id, reason=why),
        compensated=payment.PaymentRefunded.TYPE,
    ),
    Step(
        name="stock",
        module="inventory",
        command=inventory.ReserveStock.TYPE,
        action=lambda o: inventory.ReserveStock(order_id=o.order_id, lines=_stock_lines(o)),
        succeeded=inventory.StockReserved.TYPE,
        failed=frozenset({inventory.StockFailed.TYPE}),
        undo=inventory.ReleaseStock.TYPE,
        compensation=lambda o, why: inventory.ReleaseStock(order_id=o.order_id, reason=why),
        compensated=inventory.StockReleased.TYPE,
    ),
    Step(
        name="shipping",
        module="shipping",
        command=shipping.ScheduleShipment.TYPE,
        action=lambda o: shipping.ScheduleShipment(
            order_id=o.order_id,
            destination=_destination(o),
            lines=tuple(shipping.ParcelLine(sku=i.sku, quantity=i.quantity) for i in o.items),
        ),
        succeeded=shipping.ShipmentScheduled.TYPE,
        failed=frozenset({shipping.ShipmentFailed.TYPE}),
        undo=shipping.CancelShipment.TYPE,
        compensation=lambda o, why: shipping.CancelShipment(order_id=o.order_id, reason=why),
        compensated=shipping.ShipmentCancelled.TYPE,
    ),
    Step(
        name="complete",
        module="order",
        command=order.CompleteOrder.TYPE,
        action=lambda o: order.CompleteOrder(order_id=o.order_id),
        succeeded=order.OrderCompleted.TYPE,
        # The order was cancelled by someone else: undo everything before it.
        failed=frozenset({order.OrderCancelled.TYPE}),
        undo=None,
        compensation=None,
        compensated=None,
    ),
)

_BY_NAME = {step.name: step for step in STEPS}


def step_named(name: str) -> Step:
    return _BY_NAME[name]
