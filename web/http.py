"""What every module's HTTP routes share: strict decoding of request bodies, bounded nesting,
the documented error responses."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
from litestar import Response, route
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.params import (
    BodyKwarg,
    CookieParameter,
    HeaderParameter,
    ParameterKwarg,
    PathParameter,
)
from litestar.typing import FieldDefinition

from web.limits import MAX_WAIT

__all__ = [
    "MAX_JSON_DEPTH",
    "Problem",
    "StrictStructs",
    "document_body_limit",
    "edge_checks",
    "json_depth",
    "options_routes",
    "prefer_wait",
    "problems",
    "strict_body",
]

T = TypeVar("T")

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)


def prefer_wait(header: str | None) -> int:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240), at most ``MAX_WAIT``; 0 if none.

    Other preferences, and a malformed header, are ignored, as the RFC asks.
    """
    match = _PREFER_WAIT.search(header) if header else None
    return min(int(match.group(1)), MAX_WAIT) if match else 0


# Our deepest body is an order (3 levels); anything far deeper is an attack on the
# decoder (a deep enough one overflows its recursion limit: a 500 otherwise).
MAX_JSON_DEPTH = 32
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


async def strict_body(request: Any, body_type: type[T]) -> T:
    """Decode the request's JSON body strictly: no ``"1"`` where a number is due.

    Litestar converts bodies leniently (a numeric string passes as an int);
    this decodes the same bytes again without coercion, so a wrongly typed
    field is a 400 instead of a stored value. A ``msgspec.ValidationError``
    here is mapped to 400 by the application.
    """
    body = await request.body()
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
    # JSON does not tell 3 from 3.0, and JSON Schema counts 3.0 as an integer: accept
    # integral floats where an integer is due (3.5 still fails, as does "3").
    return msgspec.convert(_integral(msgspec.json.decode(body)), type=body_type, strict=True)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body`` (brackets inside strings do not count)."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: skip the scan (every ordinary request)
    depth = deepest = 0
    for token in _TOKENS.finditer(body):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


# Arguments Litestar fills from the connection itself, never from the query string.
_RESERVED = frozenset({"data", "request", "state", "scope", "headers", "cookies", "query", "body"})
_NOT_QUERY = (BodyKwarg, HeaderParameter, CookieParameter, PathParameter)


# Read from the handler's signature once, not on every request. (Bounded: handlers
# cannot be weakly referenced, and a test process builds many apps.)
@functools.lru_cache(maxsize=1024)
def query_names(handler: HTTPRouteHandler) -> frozenset[str]:
    """The query parameters a handler declares (path and header parameters excluded)."""
    names = set()
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if name in _RESERVED or isinstance(kwarg, _NOT_QUERY):
            continue
        if isinstance(kwarg, ParameterKwarg) and (kwarg.header or kwarg.cookie):
            continue
        names.add(getattr(kwarg, "name", None) or getattr(kwarg, "query", None) or name)
    return frozenset(names)


async def edge_checks(request: Any) -> None:
    """A ``before_request`` hook (after the access guard, before anything decodes input):
    refuse a query parameter the route does not declare, and a body nested deeper than
    ``MAX_JSON_DEPTH``, with a 400 naming them."""
    unknown = set(request.query_params) - set(request.path_params)
    unknown -= query_names(request.route_handler)
    if unknown:
        raise ValidationException(
            f"Validation failed: unknown query parameter {', '.join(sorted(unknown))}",
            extra=[{"key": name, "message": "unknown query parameter"} for name in sorted(unknown)],
        )
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if json_depth(await request.body()) > MAX_JSON_DEPTH:
        raise ValidationException(
            f"Validation failed: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            extra=[{"key": "body", "message": f"nesting deeper than {MAX_JSON_DEPTH}"}],
        )


class Problem(msgspec.Struct):
    """The JSON body of every error response."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


_MEANING = {
    400: "Bad request: malformed JSON or a field out of its limits (named in the body)",
    401: "Missing or wrong admin token",
    404: "Not found",
    413: "Request body over 64 KiB",
    409: "Conflicts with the resource's state (e.g. past the point of no return)",
    422: "Well-formed, but names what does not exist or reuses an Idempotency-Key",
    503: "A background part of the system is not running",
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """Error responses for a handler's ``responses=``, documented with their body."""
    return {
        code: ResponseSpec(
            data_container=Problem, description=_MEANING[code], generate_examples=False
        )
        for code in codes
    }


def document_body_limit(handlers: Iterable[HTTPRouteHandler]) -> None:
    """Every handler that takes a body also answers 413 (the app-wide size limit)."""
    for handler in handlers:
        if "data" in handler.parsed_fn_signature.parameters:
            handler.responses = {**problems(413), **(handler.responses or {})}


def options_routes(handlers: Iterable[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """An OPTIONS handler per path listing every method of that path in ``Allow``.

    Litestar adds one by itself, but when two handlers share a path (GET and PUT
    /products/{sku}) registered one by one, its ``Allow`` lists only the first.
    """
    methods: dict[str, set[str]] = {}
    for handler in handlers:
        for path in handler.paths:
            methods.setdefault(path, {"OPTIONS"}).update(handler.http_methods)
    return [_options(path, ", ".join(sorted(allowed))) for path, allowed in methods.items()]


def _options(path: str, allow: str) -> HTTPRouteHandler:
    @route(path, http_method=["OPTIONS"], include_in_schema=False, sync_to_thread=False)
    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return options


class StrictStructs(StructSchemaPlugin):
    """Struct schemas that say what ``forbid_unknown_fields`` enforces: no other property.

    (Litestar's own plugin leaves ``additionalProperties`` open, so a client reading
    the schema would think an extra field is fine; the app then refuses it.)
    """

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
