"""The order module's tables, on a registry of its own (no other module sees them)."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.tables import add_bus_tables

__all__ = ["CatalogRow", "CustomerRow", "OrderBase", "OrderItemRow", "OrderRow"]


class OrderBase(SQLModel, registry=registry()):
    pass


class OrderRow(OrderBase, table=True):
    __tablename__ = "orders"

    order_id: str = Field(primary_key=True)
    customer_id: str
    status: str
    reason: str | None = None
    # Set when a cancellation was accepted: from then on the order cannot
    # complete (the semantic lock the saga's pivot and a cancel both take).
    cancel_reason: str | None = None
    total_cents: int
    shipping_address: str
    idempotency_key: str | None = Field(default=None, unique=True)
    request_hash: str | None = None
    created_at: float
    updated_at: float


class OrderItemRow(OrderBase, table=True):
    __tablename__ = "order_items"

    order_id: str = Field(primary_key=True)
    line_no: int = Field(primary_key=True)
    sku: str
    quantity: int
    unit_price_cents: int


class CatalogRow(OrderBase, table=True):
    """The order module's copy of the catalog, fed by inventory's ProductUpdated."""

    __tablename__ = "catalog"

    sku: str = Field(primary_key=True)
    name: str
    price_cents: int


class CustomerRow(OrderBase, table=True):
    """The customers known to payment, fed by payment's CustomerUpdated."""

    __tablename__ = "customers"

    customer_id: str = Field(primary_key=True)
    name: str


add_bus_tables(OrderBase.metadata)
