"""The saga context choreographed events carry: the definition version and the saga's data.

Without a coordinator, each reacting module needs the order as created (to
build its command) and the definition version the saga started under (to know
what comes next). Both travel in the envelope's ``context``, opaque to the
modules, set when the saga's first event is emitted and passed on by every
module untouched, the way a tracing header travels.
"""

from __future__ import annotations

import msgspec

from checkout.definition import SagaData

__all__ = ["SagaContext", "decode_context", "encode_context"]


class SagaContext(msgspec.Struct, frozen=True):
    """The wire form: ``{"v": version, "data": <the first event's payload>}``."""

    v: int
    data: msgspec.Raw


_decode = msgspec.json.Decoder(SagaContext).decode
_decode_data = msgspec.json.Decoder(SagaData).decode
_encode = msgspec.json.Encoder().encode


def encode_context(version: int, payload: bytes) -> bytes:
    return _encode(SagaContext(version, msgspec.Raw(payload)))


def decode_context(context: bytes) -> tuple[int, SagaData]:
    """The version and data of a context; a context from before versions is version 1."""
    try:
        wrapped = _decode(context)
    except msgspec.ValidationError:
        return 1, _decode_data(context)
    return wrapped.v, _decode_data(wrapped.data)
