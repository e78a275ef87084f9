"""OpenTelemetry traces in one process: one trace per order, parents follow causation,
through timers, the watchdog and operators too."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bus.memory import InMemoryTransport
from bus.sqlite import Database
from checkout.db import TRACE_COLUMNS, CheckoutBase
from main import Settings, configure_tracing, create_app
from telemetry import logs, tracing
from tests.support import (
    admin_client,
    final_order,
    order_body,
    place,
    query,
    quiescent,
    seed,
    wait_for,
)
from tests.transports import LosingTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.configure(enabled=False)


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def producer_spans(spans: list[ReadableSpan], operation: str) -> dict[str, ReadableSpan]:
    """The ``create`` (or ``publish``) span of each message, by message id."""
    return {
        attribute(s, "messaging.message.id"): s
        for s in spans
        if s.kind is SpanKind.PRODUCER and attribute(s, "messaging.operation.type") == operation
    }


def check_published(spans: list[ReadableSpan], created: dict[str, ReadableSpan]) -> None:
    """The relay's ``publish`` span of each message is a child of its ``create`` span."""
    published = producer_spans(spans, "publish")
    assert set(published) == set(created)
    for message_id, span in published.items():
        assert span.parent is not None
        assert span.parent.span_id == created[message_id].context.span_id
        assert span.name == created[message_id].name.replace("create", "publish", 1)


def check_one_trace_per_order(
    spans: list[ReadableSpan], order_id: str, causes: dict[str, str | None]
) -> None:
    """Every span of the order is in the trace of the request that placed it, and each
    span's parent is the span of what caused it."""
    (request,) = [
        s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST /orders")
    ]
    assert request.context is not None
    trace_id = request.context.trace_id
    mine = [s for s in spans if attribute(s, "saga.order_id") == order_id]
    assert {s.context.trace_id for s in mine if s.context is not None} == {trace_id}
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    created = producer_spans(mine, "create")
    # Every saga message of the order was created in the trace, published and handled in it.
    assert set(created) == set(causes)
    check_published(mine, created)
    for message_id, cause in causes.items():
        create = created[message_id]
        assert create.parent is not None
        parent = by_id[create.parent.span_id]
        if cause is None:  # OrderCreated: emitted by the HTTP request
            assert parent is request
        else:
            assert parent.kind is SpanKind.CONSUMER
            assert attribute(parent, "messaging.message.id") == cause
        processed = [
            s
            for s in mine
            if s.kind is SpanKind.CONSUMER and attribute(s, "messaging.message.id") == message_id
        ]
        assert processed, f"{attribute(create, 'saga.message_type')} was never processed"
        for span in processed:
            assert span.parent is not None
            assert span.parent.span_id == create.context.span_id
            assert span.name == f"process saga.{attribute(span, 'messaging.destination.name')[5:]}"
            assert attribute(span, "messaging.system") == "saga-bus"
            assert attribute(span, "messaging.operation.type") == "process"
            assert attribute(span, "saga.attempt") == 1


@pytest.mark.parametrize("customer", ["ada", "bob"])
async def test_an_order_is_one_trace_from_the_request_through_every_command_handler_and_reply(
    data_dir, saga_mode, exporter, customer
):
    settings = Settings(data_dir=data_dir, saga=saga_mode)
    configure_tracing(settings, exporter=exporter)
    async with admin_client(create_app(settings)) as client:
        await seed(client, {"mug": (1000, 5)}, {"ada": 10_000, "bob": 500})
        exporter.clear()
        order_id = await place(client, order_body(customer, {"mug": 1}))
        order = await final_order(client, order_id)
        assert order["status"] == ("COMPLETED" if customer == "ada" else "CANCELLED")
        last = "order.OrderCompleted" if customer == "ada" else "order.OrderCancelled"

        def recorded_the_end() -> bool:
            # Checkout's consumer shows the tracker what it takes (the replies, in
            # orchestration); the tracker's own subscription brings the other events.
            # The span ends a moment before its COMMIT: wait for the timeline too.
            return any(
                attribute(s, "saga.message_type") == last
                and attribute(s, "messaging.consumer.group.name") in ("checkout", "tracker")
                for s in exporter.get_finished_spans()
            ) and bool(
                query(
                    data_dir, "checkout", "SELECT 1 FROM timeline WHERE saga_id = ? AND type = ?",
                    (order_id, last),
                )
            )  # fmt: skip

        await wait_for(recorded_the_end, what="the saga's last message in its timeline")
    causes: dict[str, str | None] = dict(
        query(
            data_dir,
            "checkout",
            "SELECT message_id, causation_id FROM timeline WHERE saga_id = ?",
            (order_id,),
        )
    )
    spans = list(exporter.get_finished_spans())
    check_one_trace_per_order(spans, order_id, causes)
    compensations = {
        attribute(s, "saga.message_type")
        for s in spans
        if attribute(s, "saga.order_id") == order_id and attribute(s, "saga.compensation")
    }
    if customer == "bob":  # payment failed: the order is cancelled, a compensation
        assert "order.CancelOrder" in compensations or "order.OrderCancelled" in compensations
    else:
        assert compensations == set()
    steps = {attribute(s, "saga.step") for s in spans if attribute(s, "saga.order_id") == order_id}
    assert "payment" in steps


async def test_a_failing_handler_marks_its_span_and_its_log_line_leads_to_the_trace(
    tmp_path, exporter
):
    settings = Settings(
        data_dir=tmp_path / "data", chaos="payment.ProcessPayment:exception=1", retry="attempts=1"
    )
    configure_tracing(settings, exporter=exporter)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.ContextFilter())
    logging.getLogger("bus.consumer").addHandler(handler)
    try:
        async with admin_client(create_app(settings)) as client:
            await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
            order_id = await place(client, order_body("ada", {"mug": 1}))

            def failed() -> list[ReadableSpan]:
                return [
                    s
                    for s in exporter.get_finished_spans()
                    if attribute(s, "saga.order_id") == order_id and attribute(s, "error.type")
                ]

            await wait_for(lambda: bool(failed()), what="the failed handler's span")
    finally:
        logging.getLogger("bus.consumer").removeHandler(handler)
    (span,) = failed()
    assert attribute(span, "error.type") == "InjectedFaultError"
    assert attribute(span, "messaging.consumer.group.name") == "payment"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (line,) = [line for line in lines if line.get("order_id") == order_id]
    assert span.context is not None
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    assert line["span_id"] == format(span.context.span_id, "016x")
    assert line["level"] == "WARNING"


async def test_with_tracing_off_no_span_is_created_and_no_trace_context_is_stored(client, data_dir):
    assert not tracing.ENABLED
    await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
    await final_order(client, await place(client, order_body("ada", {"mug": 1})))
    assert query(
        data_dir, "order", "SELECT count(*) FROM outbox WHERE traceparent IS NOT NULL"
    ) == [(0,)]
    for table in ("sagas", "tracked_sagas"):
        assert query(
            data_dir, "checkout", f"SELECT count(*) FROM {table} WHERE traceparent IS NOT NULL"
        ) == [(0,)]


# What carries the payment step to the payment module, lost on the way in these tests.
PAYMENT_TRIGGER = {"orchestration": "payment.ProcessPayment", "choreography": "order.OrderCreated"}
# The span that started the saga, whose trace its timers and operators go on in: the
# orchestrator's handling of the order's first event, or the tracker's in choreography.
SAGA_STARTED_BY = {"orchestration": "checkout", "choreography": "tracker"}


def check_moves_stay_in_the_order_trace(
    spans: list[ReadableSpan], order_id: str, causes: dict[str, str | None], saga_mode: str
) -> list[ReadableSpan]:
    """Every span of the order descends from the request that placed it; a move nothing
    in the trace caused (a timer, the watchdog, an operator) is a child of the span that
    started the saga, and what it emits a child of the move. Returns the moves."""
    (request,) = [
        s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST /orders")
    ]
    assert request.context is not None
    mine = [s for s in spans if attribute(s, "saga.order_id") == order_id]
    assert {s.context.trace_id for s in mine if s.context is not None} == {request.context.trace_id}
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    for span in mine:
        ancestor = span
        while ancestor is not request:
            assert ancestor.parent is not None, f"{ancestor.name} starts a trace of its own"
            ancestor = by_id[ancestor.parent.span_id]
    moves = [s for s in mine if s.kind is SpanKind.INTERNAL]
    for move in moves:
        assert move.parent is not None
        started = by_id[move.parent.span_id]
        assert started.kind is SpanKind.CONSUMER
        assert attribute(started, "messaging.consumer.group.name") == SAGA_STARTED_BY[saga_mode]
        assert attribute(started, "saga.message_type") == "order.OrderCreated"
        assert attribute(move, "saga.module") == "checkout"
    created = producer_spans(mine, "create")
    assert set(created) == set(causes)
    check_published(mine, created)
    for message_id, cause in causes.items():
        parent_id = created[message_id].parent
        assert parent_id is not None
        parent = by_id[parent_id.span_id]
        if cause is not None:
            assert parent.kind is SpanKind.CONSUMER
            assert attribute(parent, "messaging.message.id") == cause
        else:  # the order's first event, or what a timer or an operator sent
            assert parent is request or parent in moves
    return moves


def emitted_by(spans: list[ReadableSpan], move: ReadableSpan) -> set[str]:
    """The types of the messages a move emitted."""
    return {
        attribute(s, "saga.message_type")
        for s in spans
        if s.kind is SpanKind.PRODUCER
        and s.parent is not None
        and move.context is not None
        and s.parent.span_id == move.context.span_id
    }


def timeline_causes(data_dir: Path, order_id: str) -> dict[str, str | None]:
    return dict(
        query(
            data_dir,
            "checkout",
            "SELECT message_id, causation_id FROM timeline WHERE saga_id = ?",
            (order_id,),
        )
    )


@pytest.mark.parametrize(
    ("timeouts", "move", "reason"),
    [
        ("step=0.2,attempts=2", "saga step timeout", "payment timed out after 2 attempts"),
        ("step=30,attempts=5,saga=0.3", "saga deadline", "saga deadline exceeded"),
    ],
)
async def test_what_a_timer_sends_stays_in_the_order_trace(
    data_dir, saga_mode, exporter, timeouts, move, reason
):
    transport = LosingTransport(InMemoryTransport(), {PAYMENT_TRIGGER[saga_mode]: -1})
    settings = Settings(data_dir=data_dir, saga=saga_mode, timeouts=timeouts)
    configure_tracing(settings, exporter=exporter)
    async with admin_client(create_app(settings, transport=transport)) as client:
        await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
        exporter.clear()
        order_id = await place(client, order_body("ada", {"mug": 1}))
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir), what="every message delivered")
    assert (order["status"], order["reason"]) == ("CANCELLED", reason)

    spans = list(exporter.get_finished_spans())
    moves = check_moves_stay_in_the_order_trace(
        spans, order_id, timeline_causes(data_dir, order_id), saga_mode
    )
    fired = [m for m in moves if m.name == move]
    assert fired, f"no {move!r} span"
    assert {m.name for m in moves} <= {"saga step timeout", "saga deadline"}
    assert all(attribute(m, "saga.step") == "payment" for m in fired)
    assert all(attribute(m, "saga.attempt") >= 1 for m in fired)
    # The timers resent the step or aborted the saga; what followed is in the trace.
    assert any(emitted_by(spans, m) for m in fired)
    compensations = {
        attribute(s, "saga.message_type")
        for s in spans
        if attribute(s, "saga.order_id") == order_id and attribute(s, "saga.compensation")
    }
    assert "order.OrderCancelled" in compensations


async def test_an_operator_retry_and_abort_stay_in_the_order_trace_and_link_the_request(
    data_dir, saga_mode, exporter
):
    transport = LosingTransport(InMemoryTransport(), {PAYMENT_TRIGGER[saga_mode]: -1})
    settings = Settings(data_dir=data_dir, saga=saga_mode, timeouts="step=60")
    configure_tracing(settings, exporter=exporter)
    async with admin_client(create_app(settings, transport=transport)) as client:
        await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
        exporter.clear()
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await wait_for(lambda: len(transport.lost) == 1, what="the payment step sent once")
        retried = await client.post(f"/sagas/{order_id}/retry")
        await wait_for(lambda: len(transport.lost) == 2, what="the payment step sent again")
        aborted = await client.post(f"/sagas/{order_id}/abort", json={"reason": "on the phone"})
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir), what="every message delivered")
    assert (retried.status_code, aborted.status_code) == (202, 202)
    assert (order["status"], order["reason"]) == ("CANCELLED", "on the phone")

    spans = list(exporter.get_finished_spans())
    moves = check_moves_stay_in_the_order_trace(
        spans, order_id, timeline_causes(data_dir, order_id), saga_mode
    )
    by_name = {m.name: m for m in moves}
    assert set(by_name) == {"operator retry", "operator abort"}
    assert emitted_by(spans, by_name["operator retry"]) == {"checkout.RetrySaga"}
    assert emitted_by(spans, by_name["operator abort"]) == {"checkout.AbortSaga"}
    assert attribute(by_name["operator abort"], "saga.compensation") is True
    assert attribute(by_name["operator retry"], "saga.compensation") is False
    for action in ("retry", "abort"):
        move = by_name[f"operator {action}"]
        (request,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name.endswith(action)]
        assert request.context is not None
        assert move.context is not None
        # The operator's request is a trace of its own, linked from the move.
        assert request.context.trace_id != move.context.trace_id
        assert [link.context.span_id for link in move.links] == [request.context.span_id]


async def test_with_tracing_on_the_saga_rows_keep_the_context_that_started_them(
    data_dir, saga_mode, exporter
):
    settings = Settings(data_dir=data_dir, saga=saga_mode)
    configure_tracing(settings, exporter=exporter)
    async with admin_client(create_app(settings)) as client:
        await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir), what="every message delivered")
    started = {
        format(s.context.span_id, "016x")
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CONSUMER
        and s.context is not None
        and attribute(s, "saga.order_id") == order_id
        and attribute(s, "saga.message_type") == "order.OrderCreated"
    }
    tables = ["tracked_sagas", "sagas"] if saga_mode == "orchestration" else ["tracked_sagas"]
    for table in tables:
        ((traceparent,),) = query(
            data_dir, "checkout", f"SELECT traceparent FROM {table} WHERE saga_id = ?", (order_id,)
        )
        assert traceparent.split("-")[2] in started


async def test_a_checkout_database_from_before_the_saga_trace_context_gets_its_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkout.sqlite3"
    async with Database(path, "checkout", CheckoutBase.metadata):
        pass
    with closing(sqlite3.connect(path)) as conn:
        for table in ("sagas", "tracked_sagas"):
            for column in TRACE_COLUMNS.split(", "):
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.commit()

    async with Database(path, "checkout", CheckoutBase.metadata):
        pass

    with closing(sqlite3.connect(path)) as conn:
        for table in ("sagas", "tracked_sagas"):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            assert {"traceparent", "tracestate"} <= have
