"""OpenTelemetry traces: one trace per order, across modules and processes.

Off by default. ``configure`` turns it on when ``--tracing`` is given or the
standard environment asks for spans (``OTEL_TRACES_EXPORTER`` other than
``none``, or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``SAGA_TRACES_FILE`` (a debugging and
test aid) writes every span as a JSON line to that file instead (``{pid}`` in
the name is replaced by the process id). ``OTEL_TRACES_EXPORTER=discard`` (not
a standard value) records spans and drops them: the cost of tracing itself. Everything
else (service name, sampler, resource, OTLP headers) comes from the standard
``OTEL_*`` variables the SDK reads itself.

While off, ``ENABLED`` is False and the bus checks it before calling anything
here: no span object is created on the hot path.

The W3C trace context (``traceparent``, ``tracestate``) travels in each
envelope. A message's ``create`` span (PRODUCER) is a child of the span that
emitted it (the HTTP request, or the handler of the message that caused it);
the ``process`` span (CONSUMER) of each subscription that handles it is a
child of that ``create`` span, and so is the ``publish`` span (PRODUCER) the
relay records when it hands the message to the transport after the commit.
So parent links follow causation, and an order's spans share the trace id of
the request that placed it.

What no message of the trace causes (a saga's timer firing, choreography's
watchdog, an operator's retry, abort or resolve) records a ``saga_moved`` span
whose parent is the context stored with the saga when it started (the span
that handled its first message): what the move emits stays in the order's
trace, an operator's own request is linked to it.

The bus's spans run in the database's writer thread, many messages per
transaction, so their context is passed explicitly (as trace context strings)
rather than through the asyncio task's context.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "ENABLED",
    "TraceContext",
    "configure",
    "current",
    "enabled_by_environment",
    "message_created",
    "message_published",
    "processing",
    "saga_moved",
    "shutdown",
]

TraceContext = tuple[str | None, str | None]
"""A W3C ``(traceparent, tracestate)`` pair as carried by an envelope."""

ENABLED = False
"""True once ``configure`` turned tracing on; the bus checks it before any call here."""

MESSAGING_SYSTEM = "saga-bus"
"""``messaging.system`` of the bus's spans: ``kafka``, or ``saga-bus`` in process."""

_NONE: TraceContext = (None, None)
_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
_steps: Mapping[str, str] = {}
_prefix = "saga."


def enabled_by_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the standard variables (or ``SAGA_TRACES_FILE``) ask for spans."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return bool(
        (exporter and exporter != "none")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("SAGA_TRACES_FILE")
    )


class JsonLinesExporter(SpanExporter):
    """Writes each span as one JSON line (the SDK's own JSON form of a span)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self.out.write(json.dumps(json.loads(span.to_json())) + "\n")
        self.out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.out.close()


class _Discard(SpanExporter):
    """Drops every span: the cost of tracing without an exporter's (``discard``)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _exporter_from_environment() -> tuple[SpanExporter, bool]:
    """The exporter the environment asks for, and whether to export synchronously."""
    path = os.environ.get("SAGA_TRACES_FILE")
    if path:  # "{pid}" in the name gives each process a file of its own
        out = Path(path.replace("{pid}", str(os.getpid()))).open("a", encoding="utf-8")  # noqa: SIM115
        return JsonLinesExporter(out), True
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if name == "console":
        return ConsoleSpanExporter(), False
    if name == "discard":
        return _Discard(), False
    # Imported here: the OTLP exporter pulls protobuf, needed only when used.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(), False


def configure(
    *,
    enabled: bool,
    service_name: str = "saga-checkout",
    messaging_system: str = "saga-bus",
    destination_prefix: str = "saga.",
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Turn tracing on (returning the provider) or off.

    ``exporter`` (tests: the SDK's ``InMemorySpanExporter``) replaces the one the
    environment names, and exports synchronously.
    ``destination_prefix`` is the Kafka topic prefix: a destination is named
    like the Kafka topic (``saga.payment.commands``) on either bus.
    """
    global ENABLED, MESSAGING_SYSTEM, _prefix, _provider, _tracer
    shutdown()
    MESSAGING_SYSTEM = messaging_system
    _prefix = destination_prefix
    if not enabled:
        return None
    synchronous = True
    if exporter is None:
        exporter, synchronous = _exporter_from_environment()
    service = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    processor = SimpleSpanProcessor(exporter) if synchronous else BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _provider, _tracer, ENABLED = provider, provider.get_tracer("saga-checkout"), True
    return provider


def name_steps(steps: Mapping[str, str]) -> None:
    """Message type -> the saga step it belongs to (the ``saga.step`` attribute)."""
    global _steps
    _steps = dict(steps)


def shutdown() -> None:
    """Flush and stop the exporter; tracing is off afterwards."""
    global ENABLED, _provider, _tracer
    ENABLED = False
    _tracer = trace.NoOpTracer()
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def provider() -> TracerProvider | None:
    return _provider


def _inject(span: Span) -> TraceContext:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate")


def _extract(parent: TraceContext) -> otel_context.Context | None:
    traceparent, tracestate = parent
    if traceparent is None:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _propagator.extract(carrier)


def current() -> TraceContext:
    """The trace context of the current span (of this task or thread), if any."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return _NONE
    return _inject(span)


def _message_attributes(
    *,
    operation: str,
    destination: str,
    message_type: str,
    message_id: str,
    order_id: str,
    module: str,
    compensation: bool,
) -> dict[str, Any]:
    destination = _prefix + destination
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "messaging.message.id": message_id,
        "saga.order_id": order_id,
        "saga.message_type": message_type,
        "saga.module": module,
        "saga.step": _steps.get(message_type, ""),
        "saga.compensation": compensation,
    }
    if MESSAGING_SYSTEM == "kafka":
        attributes["messaging.kafka.message.key"] = order_id  # the record key
    return attributes


def message_created(
    parent: TraceContext,
    *,
    destination: str,
    message_type: str,
    message_id: str,
    order_id: str,
    module: str,
    compensation: bool,
) -> TraceContext:
    """Record a ``create`` span for an emitted message; return its context for the envelope.

    Without a parent (a start-up job emitting), the message starts a trace.
    """
    span = _produced(
        "create", parent, destination=destination, message_type=message_type,
        message_id=message_id, order_id=order_id, module=module, compensation=compensation,
    )  # fmt: skip
    return _inject(span)


def message_published(
    created: TraceContext,
    *,
    destination: str,
    message_type: str,
    message_id: str,
    order_id: str,
    module: str,
    compensation: bool,
) -> None:
    """Record a ``publish`` span for a message the relay handed to the transport.

    One per message, a child of the message's ``create`` span: the relay runs
    after the commit with no context of its own, so a span for its whole batch
    would be a trace apart from every order's.
    """
    _produced(
        "publish", created, destination=destination, message_type=message_type,
        message_id=message_id, order_id=order_id, module=module, compensation=compensation,
    )  # fmt: skip


def _produced(
    operation: str,
    parent: TraceContext,
    *,
    destination: str,
    message_type: str,
    message_id: str,
    order_id: str,
    module: str,
    compensation: bool,
) -> Span:
    span = _tracer.start_span(
        f"{operation} {_prefix}{destination}",
        context=_extract(parent),
        kind=SpanKind.PRODUCER,
        attributes=_message_attributes(
            operation=operation, destination=destination, message_type=message_type,
            message_id=message_id, order_id=order_id, module=module, compensation=compensation,
        ),
    )  # fmt: skip
    span.end()
    return span


@contextmanager
def processing(
    parent: TraceContext,
    *,
    destination: str,
    message_type: str,
    message_id: str,
    order_id: str,
    consumer: str,
    attempt: int,
    compensation: bool,
    partition: int | None = None,
) -> Iterator[Span]:
    """A ``process`` span (CONSUMER) around a handler, current in this thread meanwhile.

    ``partition`` is the Kafka partition of the record handled, when it came from one.
    """
    attributes = _message_attributes(
        operation="process", destination=destination, message_type=message_type,
        message_id=message_id, order_id=order_id, module=consumer, compensation=compensation,
    )  # fmt: skip
    attributes["messaging.consumer.group.name"] = consumer
    attributes["saga.attempt"] = attempt
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    span = _tracer.start_span(
        f"process {_prefix}{destination}",
        context=_extract(parent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


def saga_moved(
    saga: TraceContext,
    move: str,
    *,
    order_id: str,
    module: str,
    step: str,
    attempt: int | None = None,
    compensation: bool = False,
    link: TraceContext = _NONE,
) -> TraceContext:
    """Record a span for a move of a saga that no message caused; return its context.

    ``saga`` is the context stored with the saga when it started: the span is its
    child, so what the move emits (carrying the returned context) joins the
    order's trace. ``link`` (an operator's HTTP request, a trace of its own) is
    linked to it. Without a stored context (a saga begun while tracing was
    off), the move starts a trace.
    """
    links: list[Link] = []
    linked = _extract(link)
    if linked is not None:
        links.append(Link(trace.get_current_span(linked).get_span_context()))
    attributes: dict[str, Any] = {
        "saga.order_id": order_id,
        "saga.module": module,
        "saga.step": step,
        "saga.compensation": compensation,
    }
    if attempt is not None:
        attributes["saga.attempt"] = attempt
    span = _tracer.start_span(
        move, context=_extract(saga), kind=SpanKind.INTERNAL, attributes=attributes, links=links
    )
    span.end()
    return _inject(span)


def failed(span: Span, error: BaseException | None) -> None:
    """Mark a span as failed with ``error.type`` (nothing if ``error`` is None)."""
    if error is None:
        return
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(error)))


def context_of(span: Span) -> TraceContext:
    """The trace context to carry on from ``span``."""
    return _inject(span)
