"""What every module's HTTP routes share: strict decoding of request bodies."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = ["strict_body"]

T = TypeVar("T")


async def strict_body(request: Any, body_type: type[T]) -> T:
    """Decode the request's JSON body strictly: no ``"1"`` where a number is due.

    Litestar converts bodies leniently (a numeric string passes as an int);
    this decodes the same bytes again without coercion, so a wrongly typed
    field is a 400 instead of a stored value. A ``msgspec.ValidationError``
    here is mapped to 400 by the application.
    """
    return msgspec.json.decode(await request.body(), type=body_type)
