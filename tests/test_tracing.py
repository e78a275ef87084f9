"""OpenTelemetry traces in one process: one trace per order, parents follow causation."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from main import Settings, configure_tracing, create_app
from telemetry import logs, tracing
from tests.support import admin_client, final_order, order_body, place, query, seed, wait_for

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

        def tracker_saw_the_end() -> bool:
            return any(
                attribute(s, "saga.message_type") == last
                and attribute(s, "messaging.consumer.group.name") == "tracker"
                for s in exporter.get_finished_spans()
            )

        await wait_for(tracker_saw_the_end, what="the tracker handled the last message")
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
