"""Stock and reservations. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

__all__ = ["FailureReason", "ReservationStatus", "merge_lines", "shortfall"]


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    FAILED = "FAILED"
    # Released before any reservation arrived: a late reservation is refused.
    VOIDED = "VOIDED"


class FailureReason(StrEnum):
    INSUFFICIENT_STOCK = "insufficient_stock"
    UNKNOWN_SKU = "unknown_sku"
    ALREADY_RELEASED = "already_released"
    INJECTED_FAULT = "injected_fault"


def merge_lines(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Sum the quantities of repeated skus, keeping first-seen order."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


def shortfall(
    wanted: Mapping[str, int], available: Mapping[str, int]
) -> tuple[FailureReason, str] | None:
    """Why ``wanted`` cannot be held in full from ``available``, or None if it can.

    All or nothing: one short line fails the whole reservation, so stock is
    never partly taken for an order that cannot ship.
    """
    for sku, quantity in wanted.items():
        if sku not in available:
            return FailureReason.UNKNOWN_SKU, sku
        if available[sku] < quantity:
            return FailureReason.INSUFFICIENT_STOCK, sku
    return None
