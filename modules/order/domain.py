"""Orders: pricing and the status rules. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "IdempotencyConflictError",
    "NewOrder",
    "OrderError",
    "OrderNotFoundError",
    "OrderStatus",
    "PricedLine",
    "UnknownCustomerError",
    "UnknownSkuError",
    "price_lines",
]


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class OrderError(Exception):
    """Base of the order module's errors."""


class UnknownSkuError(OrderError):
    """Raised when an order names a sku the catalog does not have."""

    def __init__(self, skus: Sequence[str]) -> None:
        super().__init__(f"unknown sku: {', '.join(skus)}")
        self.skus = tuple(skus)


class UnknownCustomerError(OrderError):
    """Raised when an order names a customer without a payment account."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"unknown customer: {customer_id}")
        self.customer_id = customer_id


class OrderNotFoundError(OrderError):
    """Raised when no order has the given id."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id


class IdempotencyConflictError(OrderError):
    """Raised when an Idempotency-Key is reused with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different request")
        self.key = key


@dataclass(frozen=True, slots=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order as requested, before it is priced and stored."""

    order_id: str
    customer_id: str
    items: tuple[tuple[str, int], ...]
    address: Mapping[str, str]
    idempotency_key: str | None
    fingerprint: str


def price_lines(
    items: Sequence[tuple[str, int]], prices: Mapping[str, int]
) -> tuple[tuple[PricedLine, ...], int]:
    """Merge repeated skus, price each line and return the lines with their total."""
    unknown = sorted({sku for sku, _ in items if sku not in prices})
    if unknown:
        raise UnknownSkuError(unknown)
    quantities: dict[str, int] = {}
    for sku, quantity in items:
        quantities[sku] = quantities.get(sku, 0) + quantity
    lines = tuple(PricedLine(sku, qty, prices[sku]) for sku, qty in quantities.items())
    return lines, sum(line.quantity * line.unit_price_cents for line in lines)
