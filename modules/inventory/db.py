"""The inventory module's tables, on a registry of its own."""

from __future__ import annotations

from sqlalchemy import CheckConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.tables import add_bus_tables

__all__ = ["InventoryBase", "ProductRow", "ReservationLineRow", "ReservationRow"]


class InventoryBase(SQLModel, registry=registry()):
    pass


class ProductRow(InventoryBase, table=True):
    """A product; ``stock`` is what can still be sold (held units are not in it)."""

    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)

    sku: str = Field(primary_key=True)
    name: str
    price_cents: int
    stock: int


class ReservationRow(InventoryBase, table=True):
    __tablename__ = "reservations"

    order_id: str = Field(primary_key=True)
    status: str
    reason: str | None = None
    sku: str | None = None
    created_at: float
    updated_at: float


class ReservationLineRow(InventoryBase, table=True):
    __tablename__ = "reservation_lines"

    order_id: str = Field(primary_key=True)
    sku: str = Field(primary_key=True)
    quantity: int


add_bus_tables(InventoryBase.metadata)
