"""The saga's decision function, alone: given any replies, in any repetition, it ends
completed or fully compensated, in reverse order, never sending a step twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import Command, Message
from checkout.orchestrator import command_id
from checkout.saga import SagaStatus, abort, decide, start
from modules import inventory, order, payment, shipping

CREATED = order.OrderCreated(
    order_id="o1",
    customer_id="c1",
    items=(order.OrderLine(sku="mug", quantity=2, unit_price_cents=500),),
    total_cents=1000,
    shipping_address=order.OrderAddress(
        name="A", line1="1 Main", city="Berlin", postal_code="10115", country="DE"
    ),
)


def reply_to(command: Command, succeed: bool) -> Message:
    """What an honest participant answers."""
    oid = command.key
    match command:
        case payment.ProcessPayment():
            if succeed:
                return payment.PaymentCompleted(order_id=oid, customer_id="c1", amount_cents=1000)
            return payment.PaymentFailed(
                order_id=oid, customer_id="c1", amount_cents=1000, reason="insufficient_funds"
            )
        case inventory.ReserveStock():
            if succeed:
                return inventory.StockReserved(order_id=oid, lines=command.lines)
            return inventory.StockFailed(order_id=oid, reason="insufficient_stock")
        case shipping.ScheduleShipment():
            if succeed:
                return shipping.ShipmentScheduled(order_id=oid, shipment_id="s1", country="DE")
            return shipping.ShipmentFailed(order_id=oid, reason="country_not_served")
        case order.CompleteOrder():
            return order.OrderCompleted(order_id=oid)
        case payment.RefundPayment():
            return payment.PaymentRefunded(order_id=oid, customer_id="c1", amount_cents=1000)
        case inventory.ReleaseStock():
            return inventory.StockReleased(order_id=oid, lines=())
        case shipping.CancelShipment():
            return shipping.ShipmentCancelled(order_id=oid)
        case order.CancelOrder():
            return order.OrderCancelled(order_id=oid, reason=command.reason)
    raise AssertionError(command)


@settings(max_examples=300, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=3, max_size=3),
    duplicates=st.lists(st.integers(min_value=0, max_value=2), min_size=12, max_size=12),
    stale=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_any_outcomes_end_completed_or_compensated_in_reverse(outcomes, duplicates, stale):
    transition = start(CREATED)
    state, sent = transition.state, [o for o in transition.commands]
    replies_so_far: list[Message] = []
    inbox = [reply_to(o.command, outcomes[0]) for o in transition.commands]
    turn = 0
    while inbox:
        reply = inbox.pop(0)
        # Deliver it 1 to 3 times, and sometimes an old reply first.
        deliveries = [reply] * (1 + duplicates[turn % 12])
        if stale[turn % 12] and replies_so_far:
            deliveries.insert(0, replies_so_far[0])
        turn += 1
        for message in deliveries:
            next_transition = decide(state, message)
            if next_transition is None:
                continue
            state = next_transition.state
            for out in next_transition.commands:
                sent.append(out)
                step_index = (
                    ["payment", "stock", "shipping"].index(out.step)
                    if out.step in ("payment", "stock", "shipping")
                    else None
                )
                succeed = (
                    True
                    if step_index is None or out.direction == "compensate"
                    else outcomes[step_index]
                )
                inbox.append(reply_to(out.command, succeed))
        replies_so_far.append(reply)
        assert turn < 100

    assert state.status.terminal
    forward = [o.step for o in sent if o.direction == "forward"]
    undo = [o.step for o in sent if o.direction == "compensate"]
    ids = [command_id("o1", o.step, o.direction, o.attempt) for o in sent]
    assert len(ids) == len(set(ids)), "a command was sent twice"
    if all(outcomes):
        assert state.status is SagaStatus.COMPLETED
        assert forward == ["payment", "stock", "shipping", "complete"]
        assert undo == []
    else:
        failed_at = outcomes.index(False)
        succeeded = ["payment", "stock", "shipping"][:failed_at]
        assert state.status is SagaStatus.COMPENSATED
        assert forward == ["payment", "stock", "shipping"][: failed_at + 1]
        assert undo == [*reversed(succeeded), "order"]
        assert isinstance(sent[-1].command, order.CancelOrder)
        assert state.reason is not None
        assert state.reason.startswith(["payment", "stock", "shipping"][failed_at])


def test_a_reply_for_another_step_changes_nothing():
    state = start(CREATED).state
    assert decide(state, inventory.StockReserved(order_id="o1", lines=())) is None


def test_abort_compensates_the_step_in_flight_too():
    state = start(CREATED).state
    state = decide(
        state, payment.PaymentCompleted(order_id="o1", customer_id="c1", amount_cents=1000)
    ).state  # type: ignore[union-attr]
    transition = abort(state, "aborted by operator")
    assert transition is not None
    assert transition.state.to_undo == ("stock", "payment", "order")
    assert isinstance(transition.commands[0].command, inventory.ReleaseStock)
