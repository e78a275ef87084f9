"""Message base types, the envelope that carries them, and the codec registry.

Messages are frozen ``msgspec`` structs: they are typed, validated on decode and
cheap to encode (the bus encodes every message once, at outbox write time).
A message's wire identity is its ``TYPE`` (``"<module>.<Name>"``) and ``VERSION``,
never a Python import path, so stored messages survive refactoring.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from bus.errors import BusError, MessageDecodeError, UnknownMessageTypeError

__all__ = [
    "ENVELOPE_COLUMNS",
    "Command",
    "Compensated",
    "Envelope",
    "Event",
    "Failure",
    "Message",
    "MessageRegistry",
    "Undecodable",
    "Upcaster",
    "channel",
    "envelope_from_headers",
    "envelope_from_row",
    "envelope_headers",
    "envelope_row",
    "new_id",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the payload of version N into the payload of version N + 1."""


def new_id(now: float | None = None) -> str:
    """Return a fresh identifier as a 32-character hex string: a UUIDv7 (RFC 9562).

    The first 48 bits are the time in milliseconds (``now``, a Unix time in
    seconds, or the clock), the rest random. Ids made later sort later, so the
    indexes they key (the outbox's message id, the inbox, the orders) grow at
    their right edge: a commit dirties a few pages instead of one random page
    per row, and the cost of an insert stays flat as the tables grow
    (bench/README.md). The random bits come from ``uuid4`` and the time from
    the caller's clock, so the simulation's seeded runs stay exact.
    """
    millis = int((time.time() if now is None else now) * 1000) & _MILLIS_MASK
    random_bits = uuid.uuid4().int
    value = (
        millis << 80
        | 0x7 << 76
        | (random_bits >> 64 & 0xFFF) << 64
        | 0b10 << 62
        | random_bits & _RAND_B_MASK
    )
    return f"{value:032x}"


_MILLIS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every message that crosses the bus.

    ``KEY`` names the field that correlates a message: the order id for the
    saga's messages, so one order's messages stay in sequence (and on one
    Kafka partition); the sku or customer id for reference data.
    ``COMPENSATION`` marks the messages that undo a step, for the audit trail.
    """

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    KEY: ClassVar[str] = "order_id"
    COMPENSATION: ClassVar[bool] = False

    @property
    def key(self) -> str:
        """The correlation id of this message."""
        value: str = getattr(self, self.KEY)
        return value


class Undecodable(Message, frozen=True, kw_only=True):
    """Stands in for a payload that could not be decoded or validated.

    Transports deliver it instead of dropping the message, so that the
    consumer parks it as a dead letter, with the error, where an operator sees it.
    """

    TYPE = "bus.Undecodable"
    KEY = "correlation_id"
    correlation_id: str
    error: str


class Command(Message, frozen=True, kw_only=True):
    """A request to exactly one module to do something; named in the imperative."""


class Event(Message, frozen=True, kw_only=True):
    """A fact a module announces to whoever listens; named in the past tense."""


class Failure(Event, frozen=True, kw_only=True):
    """A reply saying a step did nothing, and why: ``reason`` is a short code."""

    reason: str


class Compensated(Event, frozen=True, kw_only=True):
    """A reply saying a step was undone; ``reason`` repeats why the undo was asked."""

    COMPENSATION = True
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its delivery metadata, as stored in an outbox and sent on the bus.

    ``payload`` is the message encoded once, at write time; transports that
    cross a process boundary send it as is, the in-process one hands over
    ``message`` itself. ``context`` is opaque to the modules: it carries the
    saga's data (the order as created) from event to event, the way a tracing
    header travels, so that choreography can build its commands (see
    ``checkout.choreography``). ``traceparent`` and ``tracestate`` are the W3C
    trace context of the span that emitted the message (None when tracing is
    off), so that the span that handles it joins the same trace. ``partition`` is the
    Kafka partition a consumed record came from (None in process), for its span.

    How an envelope maps to a table row and to Kafka record headers is declared
    once, below (``ENVELOPE_COLUMNS`` and the four functions next to it).
    """

    message_id: str
    type: str
    version: int
    correlation_id: str
    causation_id: str | None
    source: str
    occurred_at: float
    payload: bytes
    message: Message
    context: bytes | None = None
    seq: int = field(default=0, compare=False)
    traceparent: str | None = None
    tracestate: str | None = None
    partition: int | None = field(default=None, compare=False)


# The envelope as stored in the outbox and dead_letter tables (and, minus
# ``payload`` and ``correlation_id``, which are the record's value and key, as
# Kafka headers): one column per field, in this order. ``message`` is decoded
# from ``payload``; ``seq`` is the outbox's own row number, ``partition`` the Kafka
# partition a record was read from.
ENVELOPE_COLUMNS = (
    "message_id",
    "type",
    "version",
    "correlation_id",
    "causation_id",
    "source",
    "occurred_at",
    "payload",
    "context",
    "traceparent",
    "tracestate",
)
_HEADER_FIELDS = tuple(c for c in ENVELOPE_COLUMNS if c not in ("payload", "correlation_id"))
_FROM_TEXT: dict[str, Callable[[bytes], Any]] = {
    "version": int,
    "occurred_at": float,
    "context": bytes,
}


_ROW = operator.attrgetter(*ENVELOPE_COLUMNS)


def envelope_row(envelope: Envelope) -> tuple[Any, ...]:
    """The envelope's values in ``ENVELOPE_COLUMNS`` order, for an INSERT."""
    row: tuple[Any, ...] = _ROW(envelope)
    return row


def envelope_from_row(row: Sequence[Any], registry: MessageRegistry, *, seq: int = 0) -> Envelope:
    """The envelope of a row selected in ``ENVELOPE_COLUMNS`` order.

    A payload this build cannot read becomes ``Undecodable`` (see there).
    """
    values = dict(zip(ENVELOPE_COLUMNS, row, strict=True))
    values["message"] = registry.decode_or_undecodable(
        values["type"], values["version"], values["payload"], values["correlation_id"]
    )
    return Envelope(**values, seq=seq)


def envelope_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Kafka record headers for an envelope (its payload and key go as value and key)."""
    headers = []
    for name in _HEADER_FIELDS:
        value = getattr(envelope, name)
        if value is None:
            continue
        if isinstance(value, float):
            value = repr(value)
        headers.append((name, value if isinstance(value, bytes) else str(value).encode()))
    return headers


def envelope_from_headers(
    headers: Iterable[tuple[str, bytes]],
    key: str,
    payload: bytes,
    registry: MessageRegistry,
    *,
    partition: int | None = None,
) -> Envelope:
    """The envelope of a Kafka record (missing headers take their defaults)."""
    values: dict[str, Any] = dict.fromkeys(_HEADER_FIELDS)
    values.update(version=0, occurred_at=0.0, message_id="", type="", source="")
    for name, raw in headers:
        if name in values and raw is not None:
            values[name] = _FROM_TEXT.get(name, bytes.decode)(raw)
    values["message"] = registry.decode_or_undecodable(
        values["type"], values["version"], payload, key
    )
    return Envelope(**values, correlation_id=key, payload=payload, partition=partition)


class MessageRegistry:
    """Maps wire names and versions to message classes, and decodes payloads.

    Built explicitly from the modules' contracts in the composition root; there
    is no registry filled at import time.
    """

    def __init__(self) -> None:
        self._types: dict[str, type[Message]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}

    @classmethod
    def from_contracts(cls, *messages: Iterable[type[Message]]) -> MessageRegistry:
        registry = cls()
        for group in messages:
            for message_type in group:
                registry.register(message_type)
        return registry

    def register(
        self, message_type: type[Message], *, upcasters: dict[int, Upcaster] | None = None
    ) -> None:
        if message_type.TYPE in self._types:
            raise ValueError(f"message type {message_type.TYPE!r} registered twice")
        self._types[message_type.TYPE] = message_type
        self._decoders[message_type.TYPE] = msgspec.json.Decoder(message_type)
        for version, upcaster in (upcasters or {}).items():
            self._upcasters[(message_type.TYPE, version)] = upcaster

    def __contains__(self, type_name: str) -> bool:
        return type_name in self._types

    def message_class(self, type_name: str) -> type[Message]:
        try:
            return self._types[type_name]
        except KeyError:
            raise UnknownMessageTypeError(type_name) from None

    @property
    def types(self) -> tuple[type[Message], ...]:
        return tuple(self._types.values())

    def decode_or_undecodable(
        self, type_name: str, version: int, payload: bytes, correlation_id: str
    ) -> Message:
        """Like ``decode``, but a failure becomes an ``Undecodable`` carrying the error."""
        try:
            return self.decode(type_name, version, payload)
        except BusError as exc:
            return Undecodable(correlation_id=correlation_id, error=str(exc))

    def decode(self, type_name: str, version: int, payload: bytes) -> Message:
        """Decode a payload written at ``version``, upcasting it to the current version."""
        message_type = self.message_class(type_name)
        try:
            if version == message_type.VERSION:
                return self._decoders[type_name].decode(payload)  # type: ignore[no-any-return]
            if version > message_type.VERSION:
                raise UnknownMessageTypeError(f"{type_name} v{version}")
            data = msgspec.json.decode(payload)
            for from_version in range(version, message_type.VERSION):
                data = self._upcasters[(type_name, from_version)](data)
            return msgspec.convert(data, message_type)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            raise MessageDecodeError(type_name, version, str(exc)) from exc


def channel(message: Message) -> str:
    """The logical destination of a message: ``<module>.commands`` or ``<module>.events``
    (the Kafka topic, without its prefix)."""
    kind = "commands" if isinstance(message, Command) else "events"
    return f"{message.TYPE.partition('.')[0]}.{kind}"


def encode(message: Message) -> bytes:
    """Encode a message's fields as JSON."""
    return msgspec.json.encode(message)
