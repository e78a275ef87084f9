"""The body of a ``POST /orders`` request, as the tests, the benchmark and the chaos run send it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ADDRESS", "order_body"]

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


def order_body(
    customer_id: str, items: Mapping[str, int], *, country: str = "DE"
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku, "quantity": qty} for sku, qty in items.items()],
        "shipping_address": {**ADDRESS, "country": country},
    }
