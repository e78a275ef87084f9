"""HTTP routes of the order module: place an order, read it back."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.http import strict_body
from bus.messages import Envelope
from bus.sqlite import Database
from modules.order.db import OrderItemRow, OrderRow
from modules.order.domain import (
    IdempotencyConflictError,
    NewOrder,
    OrderStatus,
    UnknownCustomerError,
    UnknownSkuError,
)
from modules.order.handlers import place_order

__all__ = ["OrderAccepted", "OrderView", "PlaceOrderRequest", "TerminalWaiters", "order_routes"]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ItemRequest(msgspec.Struct, forbid_unknown_fields=True):
    sku: Id
    quantity: Annotated[int, msgspec.Meta(gt=0, le=10_000)]


class AddressRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    line1: Text
    city: Text
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class PlaceOrderRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: Id
    items: Annotated[list[ItemRequest], msgspec.Meta(min_length=1, max_length=100)]
    shipping_address: AddressRequest


class OrderAccepted(msgspec.Struct):
    order_id: str
    status: str


class OrderItemView(msgspec.Struct):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderView(msgspec.Struct):
    order_id: str
    status: str
    reason: str | None
    total_cents: int
    items: list[OrderItemView]
    customer_id: str
    shipping_address: AddressRequest
    created_at: datetime
    updated_at: datetime


class TerminalWaiters:
    """Wakes readers waiting for an order to reach COMPLETED or CANCELLED."""

    TERMINAL_EVENTS = frozenset({"order.OrderCompleted", "order.OrderCancelled"})

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}

    def event(self, order_id: str) -> anyio.Event:
        return self._events.setdefault(order_id, anyio.Event())

    def forget(self, order_id: str) -> None:
        self._events.pop(order_id, None)

    def on_commit(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            if envelope.type in self.TERMINAL_EVENTS:
                event = self._events.pop(envelope.correlation_id, None)
                if event is not None:
                    event.set()


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def order_routes(db: Database, waiters: TerminalWaiters) -> list[HTTPRouteHandler]:
    """Build the order routes over the module's database."""

    @post("/orders", status_code=202, operation_id="placeOrder", tags=["orders"])
    async def place(
        data: JSONBody[PlaceOrderRequest],
        request: Request[Any, Any, Any],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=200)
        ] = None,
    ) -> Response[OrderAccepted]:
        """Accept an order; the checkout saga then runs in the background."""
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
            order_id, _ = await db.transact(lambda tx: place_order(tx, new))
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
        status = await _status(db, order_id)
        return Response(
            OrderAccepted(order_id=order_id, status=status or OrderStatus.PENDING),
            status_code=202,
            headers={"Location": f"/orders/{order_id}"},
        )

    @get("/orders/{order_id:str}", operation_id="getOrder", tags=["orders"])
    async def read(
        order_id: FromPath[str],
        wait: Annotated[
            float,
            QueryParameter(ge=0, le=60, description="Seconds to wait for a terminal status"),
        ] = 0,
    ) -> OrderView:
        """Read an order; with ``wait``, hold the request until it is COMPLETED or CANCELLED."""
        if wait > 0:
            event = waiters.event(order_id)
            if await _status(db, order_id) == OrderStatus.PENDING:
                with anyio.move_on_after(wait):
                    await event.wait()
            waiters.forget(order_id)
        view = await _view(db, order_id)
        if view is None:
            raise NotFoundException(f"order {order_id} not found")
        return view

    return [place, read]


async def _status(db: Database, order_id: str) -> str | None:
    async with AsyncSession(db.reader) as session:
        row = await session.get(OrderRow, order_id)
        return None if row is None else row.status


async def _view(db: Database, order_id: str) -> OrderView | None:
    async with AsyncSession(db.reader) as session:
        row = await session.get(OrderRow, order_id)
        if row is None:
            return None
        items = await session.exec(
            select(OrderItemRow)
            .where(OrderItemRow.order_id == order_id)
            .order_by(col(OrderItemRow.line_no))
        )
        return OrderView(
            order_id=row.order_id,
            status=row.status,
            reason=row.reason,
            total_cents=row.total_cents,
            items=[OrderItemView(i.sku, i.quantity, i.unit_price_cents) for i in items],
            customer_id=row.customer_id,
            shipping_address=msgspec.json.decode(row.shipping_address, type=AddressRequest),
            created_at=_when(row.created_at),
            updated_at=_when(row.updated_at),
        )
