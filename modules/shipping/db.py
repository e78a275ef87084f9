"""The shipping module's tables, on a registry of its own."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.tables import add_bus_tables

__all__ = ["ShipmentRow", "ShippingBase"]


class ShippingBase(SQLModel, registry=registry()):
    pass


class ShipmentRow(ShippingBase, table=True):
    """One row per order: its shipment, or why there is none."""

    __tablename__ = "shipments"

    order_id: str = Field(primary_key=True)
    shipment_id: str | None = Field(default=None, unique=True)
    status: str
    reason: str | None = None
    country: str | None = None
    destination: str | None = None
    lines: str | None = None
    created_at: float
    updated_at: float


add_bus_tables(ShippingBase.metadata)
