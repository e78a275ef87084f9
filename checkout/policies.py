"""Reactions that keep one module's copy of another's data current.

They run in the receiving module's subscription, in both saga modes: the
order module prices orders and checks customers from its own copies, and
tells the customer when undoing an order waits for an operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bus.consumer import Route
from bus.messages import Command, Message
from bus.sqlite import Tx
from checkout.contract import SagaParked
from modules import inventory, order, payment

__all__ = ["REFERENCE_DATA", "SAGA_NEWS", "Translate", "reactions"]

Translate = Callable[[Tx, Message], Command | None]
"""Turns an event into the reacting module's command (None: no reaction), in its transaction."""


def _product(_tx: Tx, event: Message) -> Command:
    assert isinstance(event, inventory.ProductUpdated)
    return order.RecordProduct(sku=event.sku, name=event.name, price_cents=event.price_cents)


def _customer(_tx: Tx, event: Message) -> Command:
    assert isinstance(event, payment.CustomerUpdated)
    return order.RecordCustomer(customer_id=event.customer_id, name=event.name)


def _parked(_tx: Tx, event: Message) -> Command:
    assert isinstance(event, SagaParked)
    return order.NoteCompensationPending(order_id=event.order_id, step=event.step)


# event type -> (reacting module, the command it turns into)
REFERENCE_DATA: Mapping[str, tuple[str, Translate]] = {
    inventory.ProductUpdated.TYPE: ("order", _product),
    payment.CustomerUpdated.TYPE: ("order", _customer),
}
SAGA_NEWS: Mapping[str, tuple[str, Translate]] = {
    SagaParked.TYPE: ("order", _parked),
}


def reactions(
    module: str, commands: Mapping[str, Route], table: Mapping[str, tuple[str, Translate]]
) -> dict[str, Route]:
    """Routes for the events ``module`` reacts to: translate, then run its own handler.

    Shared by the reference-data copies here and by choreography's reactions.
    """
    routes: dict[str, Route] = {}
    for event_type, (target, translate) in table.items():
        if target != module:
            continue

        def route(tx: Tx, event: Message, translate: Translate = translate) -> None:
            command = translate(tx, event)
            if command is not None:
                commands[command.TYPE](tx, command)

        routes[event_type] = route
    return routes
