"""Logging for the whole process: plain text, or one JSON object per line.

JSON lines carry stable keys: ``ts``, ``level``, ``logger``, ``msg``, and where
known ``module``, ``order_id``, ``saga_id``, ``message_id``, ``message_type``
(from ``MESSAGE``, which the bus's consumer sets around each handler), plus
``trace_id`` and ``span_id`` when a span is current (tracing on). A log call
can pass any of these keys itself through ``extra``.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import IO, Any

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from telemetry import tracing

__all__ = ["MESSAGE", "ContextFilter", "configure"]

MESSAGE: ContextVar[tuple[str, Any] | None] = ContextVar("saga_message", default=None)
"""``(consumer, envelope)`` while a consumer handles a message (in its thread)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Adds the message being handled and the current span to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = MESSAGE.get()
        if current is not None:
            consumer, envelope = current
            fields = record.__dict__
            fields.setdefault("saga_module", consumer)
            fields.setdefault("message_id", envelope.message_id)
            fields.setdefault("message_type", envelope.type)
            if type(envelope.message).KEY == "order_id":
                fields.setdefault("order_id", envelope.correlation_id)
                fields.setdefault("saga_id", envelope.correlation_id)
        if "order_id" in record.__dict__ and "saga_id" not in record.__dict__:
            record.saga_id = record.__dict__["order_id"]
        if tracing.ENABLED:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return True


def json_formatter() -> logging.Formatter:
    # ``module`` is a standard LogRecord attribute (the Python file), so the
    # saga module travels as ``saga_module`` and is renamed on output.
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "message": "msg",
            "saga_module": "module",
        },
        timestamp="ts",
        # uvicorn adds an ANSI-coloured copy of its messages: not for a JSON pipeline.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def configure(fmt: str, level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records (uvicorn's too) to ``stream`` in ``fmt`` (text or json)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler
