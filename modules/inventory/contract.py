"""The inventory module's messages: the only thing other code may know of it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.messages import Command, Compensated, Event, Failure, Message

__all__ = [
    "MESSAGES",
    "ProductUpdated",
    "ReleaseStock",
    "ReserveStock",
    "StockFailed",
    "StockLine",
    "StockReleased",
    "StockReserved",
]


class StockLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A quantity of one sku."""

    sku: str
    quantity: Annotated[int, msgspec.Meta(gt=0)]


class ReserveStock(Command, frozen=True, kw_only=True):
    """Asks inventory to hold every line of an order, all or nothing, at most once per order."""

    TYPE = "inventory.ReserveStock"
    order_id: str
    lines: tuple[StockLine, ...]


class StockReserved(Event, frozen=True, kw_only=True):
    """Emitted when every line of an order is held; the units are no longer sellable."""

    TYPE = "inventory.StockReserved"
    order_id: str
    lines: tuple[StockLine, ...]


class StockFailed(Failure, frozen=True, kw_only=True):
    """Emitted when an order could not be held; nothing was reserved.

    ``reason`` is ``insufficient_stock`` (``sku`` names the short line),
    ``unknown_sku``, ``already_released`` or ``injected_fault``.
    """

    TYPE = "inventory.StockFailed"
    order_id: str
    sku: str | None = None


class ReleaseStock(Command, frozen=True, kw_only=True):
    """Asks inventory to put an order's held units back on sale (nothing, if none are held)."""

    TYPE = "inventory.ReleaseStock"
    COMPENSATION = True
    order_id: str
    reason: str | None = None


class StockReleased(Compensated, frozen=True, kw_only=True):
    """Emitted once per released order, with the lines put back (empty if none were held).

    ``reason`` repeats the release request's reason.
    """

    TYPE = "inventory.StockReleased"
    order_id: str
    lines: tuple[StockLine, ...]


class ProductUpdated(Event, frozen=True, kw_only=True):
    """Emitted when a product is created or its name or price changes."""

    TYPE = "inventory.ProductUpdated"
    KEY = "sku"
    sku: str
    name: str
    price_cents: Annotated[int, msgspec.Meta(ge=0)]


MESSAGES: tuple[type[Message], ...] = (
    ReserveStock,
    StockReserved,
    StockFailed,
    ReleaseStock,
    StockReleased,
    ProductUpdated,
)
