"""The orchestrator's decision function, alone: given a state and an input, expect a state
and the commands sent. A table covers every step and every input; property tests drive
whole sagas with any outcomes, duplicates and stale replies."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import Command, Message
from checkout.flow import CHECKOUT
from checkout.orchestrator import _NAMESPACE, command_id
from checkout.saga import (
    Abort,
    DeadlineExceeded,
    Input,
    Reply,
    Resolve,
    Retry,
    SagaState,
    SagaStatus,
    StepTimedOut,
    decide,
    start,
)
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
ATTEMPTS = 3


def reply_to(command: Command, succeed: bool) -> Message:  # noqa: C901 - one case a command
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
            if succeed:
                return order.OrderCompleted(order_id=oid)
            return order.CancellationRequested(order_id=oid, reason="cancelled by customer")
        case order.RequestCancellation():
            return order.CancellationRequested(order_id=oid, reason=command.reason)
        case payment.RefundPayment():
            return payment.PaymentRefunded(order_id=oid, customer_id="c1", amount_cents=1000)
        case inventory.ReleaseStock():
            return inventory.StockReleased(order_id=oid, lines=())
        case shipping.CancelShipment():
            return shipping.ShipmentCancelled(order_id=oid)
        case order.CancelOrder():
            return order.OrderCancelled(order_id=oid, reason=command.reason)
    raise AssertionError(command)


def awaiting(step: str) -> SagaState:
    """A running saga whose every step before ``step`` succeeded."""
    transition = start(CHECKOUT, CREATED)
    while transition.state.step != step:
        (out,) = transition.commands
        following = decide(CHECKOUT, transition.state, Reply(reply_to(out.command, True)))
        assert following is not None
        transition = following
    return transition.state


def undoing(step: str) -> SagaState:
    """A compensating saga about to undo ``step`` (the shipment failed)."""
    state = awaiting("shipping")
    transition = decide(CHECKOUT, state, Reply(reply_to(_forward(state), False)))
    assert transition is not None
    while transition.state.step != step:
        (out,) = transition.commands
        following = decide(CHECKOUT, transition.state, Reply(reply_to(out.command, True)))
        assert following is not None
        transition = following
    return transition.state


def _forward(state: SagaState) -> Command:
    action = CHECKOUT.step(state.step).action
    assert action is not None
    return action.build(state.order)


def _earlier_reply(state: SagaState) -> Message:
    """A reply the saga already had: the last done step's success, or the order itself."""
    previous = CHECKOUT.steps[CHECKOUT.index(state.step) - 1]
    if previous.action is None:
        return CREATED
    return reply_to(previous.action.build(state.order), True)


def _inputs(state: SagaState) -> dict[str, Input]:
    command = _forward(state)
    return {
        "success": Reply(reply_to(command, True)),
        "failure": Reply(reply_to(command, False)),
        "stale": Reply(_earlier_reply(state)),
        "timeout": StepTimedOut(ATTEMPTS),
        "last timeout": StepTimedOut(1),
        "deadline": DeadlineExceeded(),
        "retry": Retry(),
        "abort": Abort("aborted by operator"),
    }


LOCK = order.RequestCancellation.TYPE
# (awaited step, input) -> (status, awaited step, types of the commands sent); None: no change.
EXPECTED: dict[tuple[str, str], tuple[SagaStatus, str, tuple[str, ...]] | None] = {
    ("payment", "success"): (SagaStatus.RUNNING, "stock", (inventory.ReserveStock.TYPE,)),
    ("payment", "failure"): (SagaStatus.COMPENSATING, "order", (order.CancelOrder.TYPE,)),
    ("stock", "success"): (SagaStatus.RUNNING, "shipping", (shipping.ScheduleShipment.TYPE,)),
    ("stock", "failure"): (SagaStatus.COMPENSATING, "payment", (payment.RefundPayment.TYPE,)),
    ("shipping", "success"): (SagaStatus.RUNNING, "complete", (order.CompleteOrder.TYPE,)),
    ("shipping", "failure"): (
        SagaStatus.COMPENSATING,
        "stock",
        (inventory.ReleaseStock.TYPE,),
    ),
    ("complete", "success"): (SagaStatus.COMPLETED, "", ()),
    ("complete", "failure"): (
        SagaStatus.COMPENSATING,
        "shipping",
        (shipping.CancelShipment.TYPE,),
    ),
    **{(step, "stale"): None for step in ("payment", "stock", "shipping", "complete")},
    **{
        (step, "timeout"): (SagaStatus.RUNNING, step, (_type,))
        for step, _type in (
            ("payment", payment.ProcessPayment.TYPE),
            ("stock", inventory.ReserveStock.TYPE),
            ("shipping", shipping.ScheduleShipment.TYPE),
            ("complete", order.CompleteOrder.TYPE),
        )
    },
    **{
        (step, "retry"): (SagaStatus.RUNNING, step, (_type,))
        for step, _type in (
            ("payment", payment.ProcessPayment.TYPE),
            ("stock", inventory.ReserveStock.TYPE),
            ("shipping", shipping.ScheduleShipment.TYPE),
            ("complete", order.CompleteOrder.TYPE),
        )
    },
    **{
        (step, kind): (SagaStatus.RUNNING, step, (LOCK,))
        for step in ("payment", "stock", "shipping", "complete")
        for kind in ("last timeout", "deadline", "abort")
    },
}


@pytest.mark.parametrize(("step", "kind"), sorted(EXPECTED))
def test_given_a_running_step_expect(step: str, kind: str) -> None:
    state = awaiting(step)
    transition = decide(CHECKOUT, state, _inputs(state)[kind])
    expected = EXPECTED[(step, kind)]
    if expected is None:
        assert transition is None
        return
    assert transition is not None
    status, awaited, sent = expected
    assert (transition.state.status, transition.state.step) == (status, awaited)
    assert tuple(o.command.TYPE for o in transition.commands) == sent
    if kind in ("timeout", "retry"):
        assert transition.state.attempt == state.attempt + 1
    if sent == (LOCK,):
        assert transition.state.cancelling is not None


@pytest.mark.parametrize("step", ["payment", "stock", "shipping", "complete"])
def test_a_duplicate_reply_changes_nothing_the_second_time(step: str) -> None:
    state = awaiting(step)
    reply = Reply(reply_to(_forward(state), True))
    first = decide(CHECKOUT, state, reply)
    assert first is not None
    assert decide(CHECKOUT, first.state, reply) is None


@pytest.mark.parametrize("step", ["payment", "stock", "shipping", "complete"])
def test_an_abort_undoes_what_was_done_and_the_step_in_flight_once_the_lock_is_taken(step):
    state = awaiting(step)
    asked = decide(CHECKOUT, state, Abort("aborted by operator"))
    assert asked is not None
    (lock,) = asked.commands
    # The step's own reply still comes in meanwhile, and does not move the saga on.
    late = decide(CHECKOUT, asked.state, Reply(reply_to(_forward(state), True)))
    if step != "complete":
        assert late is not None
        assert late.commands == ()
    answered = decide(CHECKOUT, asked.state, Reply(reply_to(lock.command, True)))
    assert answered is not None
    done = CHECKOUT.steps[: CHECKOUT.index(step) + 1]
    expected = tuple(s.name for s in reversed(done) if s.compensation is not None)
    assert answered.state.to_undo == expected
    assert answered.state.reason == "aborted by operator"


def test_an_abort_that_meets_the_completed_order_lets_it_complete() -> None:
    state = awaiting("complete")
    asked = decide(CHECKOUT, state, Abort("aborted by operator"))
    assert asked is not None
    completed = decide(CHECKOUT, asked.state, Reply(order.OrderCompleted(order_id="o1")))
    assert completed is not None
    assert completed.state.status is SagaStatus.COMPLETED


def test_a_customers_cancellation_is_answered_like_the_lock() -> None:
    state = awaiting("stock")
    cancelled = order.CancellationRequested(order_id="o1", reason="cancelled by customer")
    transition = decide(CHECKOUT, state, Reply(cancelled))
    assert transition is not None
    assert transition.state.to_undo == ("stock", "payment", "order")
    assert transition.state.reason == "cancelled by customer"


UNDO_EXPECTED: dict[tuple[str, str], tuple[SagaStatus, str, tuple[str, ...]] | None] = {
    ("stock", "success"): (SagaStatus.COMPENSATING, "payment", (payment.RefundPayment.TYPE,)),
    ("payment", "success"): (SagaStatus.COMPENSATING, "order", (order.CancelOrder.TYPE,)),
    ("order", "success"): (SagaStatus.COMPENSATED, "", ()),
    **{(s, "timeout"): None for s in ("stock", "payment", "order")},  # filled below
    **{(s, kind): None for s in ("stock", "payment", "order") for kind in ("deadline", "abort")},
}


@pytest.mark.parametrize(("step", "kind"), sorted(UNDO_EXPECTED))
def test_given_a_compensation_expect(step: str, kind: str) -> None:
    state = undoing(step)
    compensation = CHECKOUT.step(step).compensation
    assert compensation is not None
    command = compensation.build(state.order, state.reason or "")
    inputs: dict[str, Input] = {
        "success": Reply(reply_to(command, True)),
        "timeout": StepTimedOut(ATTEMPTS),
        "deadline": DeadlineExceeded(),
        "abort": Abort("again"),
    }
    transition = decide(CHECKOUT, state, inputs[kind])
    if kind == "timeout":
        # A compensation must happen: sent again (until its attempts run out: parked).
        assert transition is not None
        assert [o.command.TYPE for o in transition.commands] == [command.TYPE]
        assert transition.state.attempt == state.attempt + 1
        return
    expected = UNDO_EXPECTED[(step, kind)]
    if expected is None:
        assert transition is None
        return
    assert transition is not None
    status, awaited, sent = expected
    assert (transition.state.status, transition.state.step) == (status, awaited)
    assert tuple(o.command.TYPE for o in transition.commands) == sent


def test_a_finished_saga_ignores_everything() -> None:
    state = awaiting("complete")
    done = decide(CHECKOUT, state, Reply(order.OrderCompleted(order_id="o1")))
    assert done is not None
    for event in (Retry(), Abort("x"), DeadlineExceeded(), StepTimedOut(1)):
        assert decide(CHECKOUT, done.state, event) is None


FORWARD = ["payment", "stock", "shipping", "complete"]


@settings(max_examples=300, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=4, max_size=4),
    duplicates=st.lists(st.integers(min_value=0, max_value=2), min_size=12, max_size=12),
    stale=st.lists(st.booleans(), min_size=12, max_size=12),
    abort_at=st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
)
def test_any_outcomes_end_completed_or_compensated_in_reverse(
    outcomes: list[bool], duplicates: list[int], stale: list[bool], abort_at: int | None
) -> None:
    transition = start(CHECKOUT, CREATED)
    state, sent = transition.state, list(transition.commands)
    inbox: list[Message] = [reply_to(o.command, outcomes[0]) for o in transition.commands]
    seen: list[Message] = []
    turn = 0

    def apply(event: Input) -> None:
        nonlocal state
        following = decide(CHECKOUT, state, event)
        if following is None:
            return
        state = following.state
        for out in following.commands:
            sent.append(out)
            succeed = out.direction != "forward" or outcomes[FORWARD.index(out.step)]
            inbox.append(reply_to(out.command, succeed))

    while inbox:
        if turn == abort_at:
            apply(Abort("aborted by operator"))
        reply = inbox.pop(0)
        deliveries: list[Any] = [reply] * (1 + duplicates[turn % 12])
        if stale[turn % 12] and seen:
            deliveries.insert(0, seen[0])
        turn += 1
        for message in deliveries:
            apply(Reply(message))
        seen.append(reply)
        assert turn < 100

    assert state.status.terminal
    forward = [o.step for o in sent if o.direction == "forward"]
    undo = [o.step for o in sent if o.direction == "compensate"]
    ids = [command_id("o1", o.step, o.direction, o.attempt) for o in sent]
    assert len(ids) == len(set(ids)), "a command was sent twice"
    assert forward == FORWARD[: len(forward)], "steps ran out of order"
    if state.status is SagaStatus.COMPLETED:
        assert undo == []
        assert forward == FORWARD
    else:
        # Every step that succeeded is undone, each once, last first, ending with the order.
        ran = [s for s in forward if CHECKOUT.step(s).compensation is not None]
        succeeded = [s for s in ran if outcomes[FORWARD.index(s)]]
        assert undo[-1] == "order"
        assert undo[:-1] == sorted(set(undo[:-1]), key=FORWARD.index, reverse=True)
        assert set(succeeded) <= set(undo)
        assert isinstance(sent[-1].command, order.CancelOrder)
        assert state.reason
    if all(outcomes) and abort_at is None:
        assert state.status is SagaStatus.COMPLETED


def _parked() -> SagaState:
    """A saga whose refund was refused until its undo attempts ran out."""
    state = undoing("payment")
    refused = payment.RefundFailed(order_id="o1", customer_id="c1", reason="account_closed")
    noted = decide(CHECKOUT, state, Reply(refused))
    assert noted is not None
    assert noted.commands == ()
    assert noted.state.last_error == "account_closed"
    state = noted.state
    while state.status is SagaStatus.COMPENSATING:
        timed_out = decide(CHECKOUT, state, StepTimedOut(ATTEMPTS))
        assert timed_out is not None
        state = timed_out.state
    assert state.attempt == ATTEMPTS
    return state


def test_a_compensation_that_keeps_failing_parks_after_its_attempts() -> None:
    state = _parked()
    assert (state.status, state.step) == (SagaStatus.PARKED, "payment")
    # Parked: no timer, deadline or abort moves it.
    for event in (StepTimedOut(ATTEMPTS), DeadlineExceeded(), Abort("x")):
        assert decide(CHECKOUT, state, event) is None


def test_retry_resumes_a_parked_compensation_with_fresh_attempts_and_new_ids() -> None:
    parked = _parked()
    resumed = decide(CHECKOUT, parked, Retry())
    assert resumed is not None
    assert resumed.state.status is SagaStatus.COMPENSATING
    (out,) = resumed.commands
    assert isinstance(out.command, payment.RefundPayment)
    assert out.attempt == parked.attempt + 1  # a new command id: not deduplicated away
    again = decide(CHECKOUT, resumed.state, StepTimedOut(ATTEMPTS))
    assert again is not None
    assert again.state.status is SagaStatus.COMPENSATING  # the attempts count afresh
    done = decide(CHECKOUT, resumed.state, Reply(reply_to(out.command, True)))
    assert done is not None
    assert (done.state.status, done.state.step) == (SagaStatus.COMPENSATING, "order")


def test_resolve_goes_on_with_the_undo_before_and_only_when_parked() -> None:
    parked = _parked()
    resolved = decide(CHECKOUT, parked, Resolve("refunded by hand"))
    assert resolved is not None
    assert (resolved.state.status, resolved.state.step) == (SagaStatus.COMPENSATING, "order")
    assert [o.command.TYPE for o in resolved.commands] == [order.CancelOrder.TYPE]
    assert decide(CHECKOUT, resolved.state, Resolve("again")) is None
    assert decide(CHECKOUT, awaiting("stock"), Resolve("not parked")) is None


@settings(max_examples=300, deadline=None)
@given(
    saga_id=st.text(min_size=1, max_size=40),
    step=st.sampled_from([s.name for s in CHECKOUT.steps]),
    direction=st.sampled_from(["forward", "undo"]),
    attempt=st.integers(1, 50),
    started=st.floats(0, 4e9, allow_nan=False),
)
def test_command_ids_are_uuid5_digests_behind_the_saga_start(
    saga_id: str, step: str, direction: str, attempt: int, started: float
) -> None:
    """The id's digest is exactly uuid5's (ids already stored keep deduplicating the
    same commands after an upgrade); its first 12 hex digits are the start in ms."""
    got = command_id(saga_id, step, direction, attempt, started)
    want = uuid.uuid5(_NAMESPACE, f"{saga_id}:{step}:{direction}:{attempt}").hex
    assert got[12:] == want[12:]
    assert got[:12] == f"{int(started * 1000) & 0xFFFFFFFFFFFF:012x}"
