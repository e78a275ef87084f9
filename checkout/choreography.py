"""Choreography: no coordinator, each module reacts to the others' events.

The table below is the whole flow. Each reaction runs in the subscription of
the module that reacts (payment reacts to OrderCreated, and so on), inside that
module's own transaction, and calls the very handler that the orchestrator's
command would reach: only the wiring differs between the two modes.

Events carry the saga's context (the order as created) in their envelope, the
way a tracing header travels: set when the first reaction handles
OrderCreated, passed on by every module untouched. That is what lets
inventory reserve the order's lines on PaymentCompleted without asking the
order module, and what tells a reaction whether a saga is choreographed at all
(an orchestrated saga's events have no context, so these reactions leave them
alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import msgspec

from bus.consumer import Route
from bus.messages import Command, Message
from bus.sqlite import Tx
from checkout.contract import SagaAborted
from checkout.policies import reactions
from checkout.steps import step_named
from modules import inventory, order, payment, shipping

__all__ = ["REACTIONS", "choreography_routes"]

Reaction = Callable[[Message, order.OrderCreated], Command]

_decode_order = msgspec.json.Decoder(order.OrderCreated).decode


def _forward(step: str) -> Reaction:
    action = step_named(step).action
    assert action is not None
    return lambda _event, created: action(created)


def _failed(step: str, then: Callable[[str, str], Command]) -> Reaction:
    def react(event: Message, created: order.OrderCreated) -> Command:
        return then(created.order_id, f"{step} failed: {getattr(event, 'reason', '') or 'unknown'}")

    return react


def _pass_on(then: Callable[[str, str], Command]) -> Reaction:
    def react(event: Message, created: order.OrderCreated) -> Command:
        return then(created.order_id, getattr(event, "reason", None) or "compensated")

    return react


def _cancel(order_id: str, reason: str) -> Command:
    return order.CancelOrder(order_id=order_id, reason=reason)


def _refund(order_id: str, reason: str) -> Command:
    return payment.RefundPayment(order_id=order_id, reason=reason)


def _release(order_id: str, reason: str) -> Command:
    return inventory.ReleaseStock(order_id=order_id, reason=reason)


def _cancel_shipment(order_id: str, reason: str) -> Command:
    # Without a coordinator the order completes on ShipmentScheduled: an abort
    # decided from the tracker's (possibly late) view must not undo that.
    return shipping.CancelShipment(order_id=order_id, reason=reason, keep_if_scheduled=True)


# event type -> (the module that reacts, what it does)
REACTIONS: Mapping[str, tuple[str, Reaction]] = {
    # The happy path.
    order.OrderCreated.TYPE: ("payment", _forward("payment")),
    payment.PaymentCompleted.TYPE: ("inventory", _forward("stock")),
    inventory.StockReserved.TYPE: ("shipping", _forward("shipping")),
    shipping.ShipmentScheduled.TYPE: ("order", _forward("complete")),
    # Compensation, in reverse order: each undo's event triggers the next undo.
    payment.PaymentFailed.TYPE: ("order", _failed("payment", _cancel)),
    inventory.StockFailed.TYPE: ("payment", _failed("stock", _refund)),
    shipping.ShipmentFailed.TYPE: ("inventory", _failed("shipping", _release)),
    inventory.StockReleased.TYPE: ("payment", _pass_on(_refund)),
    payment.PaymentRefunded.TYPE: ("order", _pass_on(_cancel)),
    # An abort (operator or deadline) undoes every step, last first; each undo
    # is safe when its step never ran.
    SagaAborted.TYPE: ("shipping", _pass_on(_cancel_shipment)),
    shipping.ShipmentCancelled.TYPE: ("inventory", _pass_on(_release)),
}


def _in_context(reaction: Reaction, tx: Tx, event: Message) -> Command | None:
    """Run a reaction with the saga's context: the order as created."""
    if isinstance(event, order.OrderCreated):
        created = event
        assert tx.cause is not None
        tx.context = tx.cause.payload  # the saga's context starts here
    elif tx.context is None:
        return None  # an orchestrated saga: not ours to react to
    else:
        created = _decode_order(tx.context)
    return reaction(event, created)


def choreography_routes(module: str, commands: Mapping[str, Route]) -> dict[str, Route]:
    """The routes through which ``module`` reacts to other modules' events."""
    table = {
        event_type: (reacting, partial(_in_context, reaction))
        for event_type, (reacting, reaction) in REACTIONS.items()
    }
    return reactions(module, commands, table)
