"""The checkout, declared once: every step, its kind, its messages and its undo.

create order → take payment → reserve stock → schedule shipment → confirm the
order. Confirming the order is the pivot: it happens in the order module, on
the order's own row, which is also where a customer's cancellation lands, so a
cancellation and the confirmation serialize there and exactly one of them wins
(the semantic lock). Every step before it can be undone (a scheduled shipment
can still be cancelled until the order is confirmed); nothing comes after it.

Adding a step is adding a ``Step`` here, as a new version kept beside the old
one while sagas begun under it are in flight (see the README, "How to add a
step").
"""

from __future__ import annotations

from checkout.definition import Definitions, SagaData, SagaDefinition, Send, Step, StepKind, Undo
from modules import inventory, order, payment, shipping

__all__ = ["CHECKOUT", "CONFIRM", "DEFINITIONS", "ORDER", "PAYMENT", "SHIPPING", "STOCK"]


def _stock_lines(o: SagaData) -> tuple[inventory.StockLine, ...]:
    return tuple(inventory.StockLine(sku=i.sku, quantity=i.quantity) for i in o.items)


def _shipment(o: SagaData) -> shipping.ScheduleShipment:
    a = o.shipping_address
    return shipping.ScheduleShipment(
        order_id=o.order_id,
        destination=shipping.Destination(
            name=a.name, line1=a.line1, city=a.city, postal_code=a.postal_code, country=a.country
        ),
        lines=tuple(shipping.ParcelLine(sku=i.sku, quantity=i.quantity) for i in o.items),
    )


ORDER = Step(
    name="order",
    module="order",
    kind=StepKind.COMPENSATABLE,
    action=None,  # placing the order (POST /orders) starts the saga
    succeeded=order.OrderCreated,
    compensation=Undo(
        order.CancelOrder, lambda o, why: order.CancelOrder(order_id=o.order_id, reason=why)
    ),
    compensated=order.OrderCancelled,
)

PAYMENT = Step(
    name="payment",
    module="payment",
    kind=StepKind.COMPENSATABLE,
    action=Send(
        payment.ProcessPayment,
        lambda o: payment.ProcessPayment(
            order_id=o.order_id, customer_id=o.customer_id, amount_cents=o.total_cents
        ),
    ),
    succeeded=payment.PaymentCompleted,
    failed=(payment.PaymentFailed,),
    compensation=Undo(
        payment.RefundPayment, lambda o, why: payment.RefundPayment(order_id=o.order_id, reason=why)
    ),
    compensated=payment.PaymentRefunded,
    compensation_failed=(payment.RefundFailed,),  # the account is closed: try again later
)

STOCK = Step(
    name="stock",
    module="inventory",
    kind=StepKind.COMPENSATABLE,
    action=Send(
        inventory.ReserveStock,
        lambda o: inventory.ReserveStock(order_id=o.order_id, lines=_stock_lines(o)),
    ),
    succeeded=inventory.StockReserved,
    failed=(inventory.StockFailed,),
    compensation=Undo(
        inventory.ReleaseStock,
        lambda o, why: inventory.ReleaseStock(order_id=o.order_id, reason=why),
    ),
    compensated=inventory.StockReleased,
)

SHIPPING = Step(
    name="shipping",
    module="shipping",
    kind=StepKind.COMPENSATABLE,
    action=Send(shipping.ScheduleShipment, _shipment),
    succeeded=shipping.ShipmentScheduled,
    failed=(shipping.ShipmentFailed,),
    compensation=Undo(
        shipping.CancelShipment,
        lambda o, why: shipping.CancelShipment(order_id=o.order_id, reason=why),
    ),
    compensated=shipping.ShipmentCancelled,
)

CONFIRM = Step(
    name="complete",
    module="order",
    kind=StepKind.PIVOT,
    action=Send(order.CompleteOrder, lambda o: order.CompleteOrder(order_id=o.order_id)),
    succeeded=order.OrderCompleted,
    # The order's row is the lock: once a cancellation is accepted there, the
    # order answers every completion attempt with this, and the saga undoes
    # everything before.
    failed=(order.CancellationRequested,),
    lock=Undo(
        order.RequestCancellation,
        lambda o, why: order.RequestCancellation(order_id=o.order_id, reason=why),
    ),
)

CHECKOUT = SagaDefinition("checkout", 1, (ORDER, PAYMENT, STOCK, SHIPPING, CONFIRM))

DEFINITIONS = Definitions(current=CHECKOUT)
"""The checkout definitions this build runs: the current one, and any older one kept
for sagas begun under it that may still be in flight."""
