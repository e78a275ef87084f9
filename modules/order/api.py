"""HTTP routes of the order module: place an order, read it back."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody, QueryParameter

from bus.messages import Envelope
from bus.sqlite import Database
from modules.order.domain import (
    IdempotencyConflictError,
    NewOrder,
    OrderNotFoundError,
    OrderStatus,
    UnknownCustomerError,
    UnknownSkuError,
)
from modules.order.handlers import cancel_by_customer, place_order
from web.auth import PUBLIC
from web.http import prefer_wait, problems, strict_body
from web.limits import (
    MAX_LINES,
    MAX_WAIT,
    Cents,
    Country,
    Id,
    IdempotencyKey,
    IdPath,
    Prefer,
    Quantity,
    Text,
)

__all__ = ["OrderAccepted", "OrderView", "PlaceOrderRequest", "TerminalWaiters", "order_routes"]


class ItemRequest(msgspec.Struct, forbid_unknown_fields=True):
    sku: Id
    quantity: Quantity


class AddressRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    line1: Text
    city: Text
    postal_code: Text
    country: Country


class PlaceOrderRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: Id
    items: Annotated[list[ItemRequest], msgspec.Meta(min_length=1, max_length=MAX_LINES)]
    shipping_address: AddressRequest


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Text | None = None


class OrderAccepted(msgspec.Struct, omit_defaults=True):
    order_id: str
    status: str
    # Why it was cancelled, when the answer waited for the end (``Prefer: wait``);
    # absent otherwise, so the answer without that header is what it always was.
    reason: str | None = None


class OrderItemView(msgspec.Struct):
    sku: str
    quantity: int
    unit_price_cents: Cents


class AddressView(msgspec.Struct):
    name: str
    line1: str
    city: str
    postal_code: str
    country: str


class OrderView(msgspec.Struct):
    order_id: str
    status: str
    reason: str | None
    total_cents: int
    items: list[OrderItemView]
    customer_id: str
    shipping_address: AddressView
    created_at: datetime
    updated_at: datetime


class TerminalWaiters:
    """Wakes readers waiting for an order to reach COMPLETED or CANCELLED."""

    TERMINAL_EVENTS = frozenset({"order.OrderCompleted", "order.OrderCancelled"})

    class _Entry:
        __slots__ = ("event", "waiting")

        def __init__(self) -> None:
            self.event = anyio.Event()
            self.waiting = 0

    def __init__(self) -> None:
        self._entries: dict[str, TerminalWaiters._Entry] = {}

    @contextmanager
    def watching(self, order_id: str) -> Iterator[anyio.Event]:
        """An event set when the order ends; shared by every reader of that order."""
        entry = self._entries.setdefault(order_id, self._Entry())
        entry.waiting += 1
        try:
            yield entry.event
        finally:
            entry.waiting -= 1
            if entry.waiting == 0 and self._entries.get(order_id) is entry:
                del self._entries[order_id]

    def on_commit(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            if envelope.type in self.TERMINAL_EVENTS:
                entry = self._entries.pop(envelope.correlation_id, None)
                if entry is not None:
                    entry.event.set()


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def order_routes(
    db: Database, waiters: TerminalWaiters, *, pivot: str = "complete"
) -> list[HTTPRouteHandler]:
    """Build the order routes over the module's database."""

    @post("/orders", status_code=202, operation_id="placeOrder", tags=["orders"], opt=PUBLIC,
          responses=problems(422))  # fmt: skip
    async def place(
        data: JSONBody[PlaceOrderRequest],
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
    ) -> Response[OrderAccepted]:
        """Accept an order; the checkout saga then runs in the background.

        With ``Prefer: wait=N`` the answer waits up to N seconds for the order to
        end, and carries its status then (one request instead of a POST and a
        long-polling GET; still 202, ``status`` PENDING if it has not ended).
        """
        data = await strict_body(request, PlaceOrderRequest)
        fingerprint = hashlib.sha256(msgspec.json.encode(data)).hexdigest()
        new = NewOrder(
            order_id=str(uuid.uuid4()),
            customer_id=data.customer_id,
            items=tuple((item.sku, item.quantity) for item in data.items),
            address=msgspec.structs.asdict(data.shipping_address),
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        try:
            order_id, status = await db.transact(lambda tx: place_order(tx, new))
        except UnknownSkuError as exc:
            raise ClientException(
                str(exc), status_code=422, extra={"unknown_skus": list(exc.skus)}
            ) from exc
        except UnknownCustomerError as exc:
            raise ClientException(
                str(exc), status_code=422, extra={"customer_id": exc.customer_id}
            ) from exc
        except IdempotencyConflictError as exc:
            raise ClientException(
                str(exc), status_code=422, extra={"idempotency_key": exc.key}
            ) from exc
        headers = {"Location": f"/orders/{order_id}"}
        accepted = OrderAccepted(order_id=order_id, status=status)
        wait = prefer_wait(prefer)
        if wait:
            headers["Preference-Applied"] = f"wait={wait}"
            ended = await _status_within(db, waiters, order_id, wait)
            assert ended is not None, "the order was just stored"
            accepted.status, accepted.reason = ended
        return Response(
            accepted,
            status_code=202,
            headers=headers,
        )

    @get("/orders/{order_id:str}", operation_id="getOrder", tags=["orders"], opt=PUBLIC,
         responses=problems(404))  # fmt: skip
    async def read(
        order_id: IdPath,
        wait: Annotated[
            float,
            QueryParameter(ge=0, le=MAX_WAIT, description="Seconds to wait for a terminal status"),
        ] = 0,
    ) -> OrderView:
        """Read an order; with ``wait``, hold the request until it is COMPLETED or CANCELLED."""
        if wait > 0:
            await _status_within(db, waiters, order_id, wait)
        view = db.read_now(partial(_view, order_id))
        if view is None:
            raise NotFoundException(f"order {order_id} not found")
        return view

    @post(
        "/orders/{order_id:str}/cancel", operation_id="cancelOrder", tags=["orders"],
        status_code=202, opt=PUBLIC, responses=problems(404, 409),
    )  # fmt: skip
    async def cancel(
        order_id: IdPath,
        request: Request[Any, Any, Any],
        data: JSONBody[CancelRequest | None] = None,
    ) -> Response[OrderView]:
        """Cancel an order while its saga runs: 202, and the saga undoes what it did.

        200 if it is already cancelled; 409 once it is past the point of no return.
        The order id is the capability: whoever holds it may cancel the order.
        """
        body = await request.body()
        asked = msgspec.json.decode(body, type=CancelRequest | None) if body.strip() else None
        reason = "cancelled by customer" + (f": {asked.reason}" if asked and asked.reason else "")
        try:
            before = await db.transact(lambda tx: cancel_by_customer(tx, order_id, reason))
        except OrderNotFoundError as exc:
            raise NotFoundException(str(exc)) from exc
        if before is OrderStatus.COMPLETED:
            raise ClientException(
                f"order is past the point of no return ({pivot})", status_code=409
            )
        view = db.read_now(partial(_view, order_id))
        assert view is not None
        return Response(view, status_code=200 if before is OrderStatus.CANCELLED else 202)

    return [place, read, cancel]


# What a reader is told of why an order is not (yet) complete.
_REASON = "coalesce(reason, 'cancellation pending: ' || cancel_reason)"


async def _status_within(
    db: Database, waiters: TerminalWaiters, order_id: str, wait: float
) -> tuple[str, str | None] | None:
    """The order's status and reason once it ends, or after ``wait`` seconds (the long
    poll of GET and of POST's ``Prefer: wait``); None if there is no such order."""
    with waiters.watching(order_id) as ended:
        # Watching before the first read: an end committed in between still wakes us.
        row = db.read_now(partial(_status, order_id))
        if row is not None and row[0] == OrderStatus.PENDING:
            with anyio.move_on_after(wait):
                await ended.wait()
            row = db.read_now(partial(_status, order_id))
    return row


def _status(order_id: str, conn: sqlite3.Connection) -> tuple[str, str | None] | None:
    row: tuple[str, str | None] | None = conn.execute(
        f"SELECT status, {_REASON} FROM orders WHERE order_id = ?",  # noqa: S608 - constant
        (order_id,),
    ).fetchone()
    return row


def _view(order_id: str, conn: sqlite3.Connection) -> OrderView | None:
    row = conn.execute(
        f"SELECT status, {_REASON}, total_cents, customer_id, shipping_address,"  # noqa: S608
        " created_at, updated_at FROM orders WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        return None
    items = conn.execute(
        "SELECT sku, quantity, unit_price_cents FROM order_items WHERE order_id = ?"
        " ORDER BY line_no",
        (order_id,),
    )
    status, reason, total, customer_id, address, created_at, updated_at = row
    return OrderView(
        order_id=order_id,
        status=status,
        reason=reason,
        total_cents=total,
        items=[OrderItemView(sku, quantity, price) for sku, quantity, price in items],
        customer_id=customer_id,
        shipping_address=_decode_address(address),
        created_at=_when(created_at),
        updated_at=_when(updated_at),
    )


_decode_address = msgspec.json.Decoder(AddressView).decode
