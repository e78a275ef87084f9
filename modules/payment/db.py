"""The payment module's tables, on a registry of its own."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.tables import add_bus_tables

__all__ = ["AccountRow", "LedgerRow", "PaymentBase", "PaymentRow"]


class PaymentBase(SQLModel, registry=registry()):
    pass


class AccountRow(PaymentBase, table=True):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance_cents >= 0", name="balance_not_negative"),)

    customer_id: str = Field(primary_key=True)
    name: str
    balance_cents: int
    status: str | None = None  # "open" (also when NULL) or "closed"


class PaymentRow(PaymentBase, table=True):
    """One row per order: the outcome of its charge, kept so a repeat gets the same answer."""

    __tablename__ = "payments"

    order_id: str = Field(primary_key=True)
    customer_id: str | None
    amount_cents: int
    status: str
    reason: str | None = None
    created_at: float
    updated_at: float


class LedgerRow(PaymentBase, table=True):
    """Money movements; at most one charge and one refund per order, by construction."""

    __tablename__ = "ledger"
    __table_args__ = (UniqueConstraint("order_id", "kind", name="one_movement_per_kind"),)

    entry_id: int | None = Field(default=None, primary_key=True)
    order_id: str
    customer_id: str
    kind: str
    amount_cents: int
    at: float


add_bus_tables(PaymentBase.metadata)
