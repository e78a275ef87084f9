"""``orders place``: many orders at a set concurrency, each followed to its end.

Each order is placed (``POST /orders``) and then read with the API's long poll
(``GET /orders/{id}?wait=``) until it is COMPLETED or CANCELLED: its latency is
the time from the request to its end, as a customer would see it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from cli.client import Api, ApiError

__all__ = ["FAILING_COUNTRY", "LoadResult", "order_body", "place_orders"]

# No carrier serves Antarctica: such an order is paid and reserved, then shipping
# refuses it and the saga compensates (refund, restock, cancel).
FAILING_COUNTRY = "AQ"
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115"}


def order_body(n: int, *, products: int, customers: int, fail: bool) -> dict[str, Any]:
    """The n-th order over the ``seed`` catalog; ``fail`` ships it where nobody delivers."""
    return {
        "customer_id": f"customer-{n % customers + 1}",
        "items": [{"sku": f"sku-{n % products + 1}", "quantity": 1}],
        "shipping_address": {**ADDRESS, "country": FAILING_COUNTRY if fail else "DE"},
    }


def _fails(n: int, fraction: float) -> bool:
    """Exactly floor(count x fraction) of the first ``count`` orders fail, spread evenly."""
    return math.floor((n + 1) * fraction) > math.floor(n * fraction)


@dataclass
class LoadResult:
    placed: int = 0
    completed: int = 0
    cancelled: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def per_second(self) -> float:
        return (self.completed + self.cancelled.total()) / self.elapsed if self.elapsed else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "placed": self.placed, "completed": self.completed,
            "cancelled": sum(self.cancelled.values()), "cancelled_by_reason": dict(self.cancelled),
            "pending": self.pending, "elapsed_seconds": round(self.elapsed, 3),
            "sagas_per_second": round(self.per_second, 2),
            "p50_seconds": round(self.percentile(50), 4),
            "p99_seconds": round(self.percentile(99), 4),
        }  # fmt: skip


async def _one(
    client: httpx.AsyncClient, api: Api, body: dict[str, Any], result: LoadResult
) -> None:
    started = time.perf_counter()
    order = api.check("POST", "/orders", await client.post("/orders", json=body))
    result.placed += 1
    order_id = order["order_id"]
    deadline = started + 120.0
    while True:
        path = f"/orders/{order_id}"
        view = api.check("GET", path, await client.get(path, params={"wait": 10}))
        if view["status"] in ("COMPLETED", "CANCELLED") or time.perf_counter() > deadline:
            break
    result.latencies.append(time.perf_counter() - started)
    if view["status"] == "COMPLETED":
        result.completed += 1
    elif view["status"] == "CANCELLED":
        result.cancelled[view.get("reason") or "unknown"] += 1
    else:
        result.pending += 1


async def place_orders(
    api: Api,
    *,
    count: int,
    concurrency: int,
    fail_fraction: float,
    products: int,
    customers: int,
    advance: Callable[[], None],
) -> LoadResult:
    """Place ``count`` orders, ``concurrency`` at a time; ``advance`` is called as each ends."""
    result = LoadResult()
    limiter = anyio.Semaphore(concurrency)
    started = time.perf_counter()

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        async with limiter:
            body = order_body(
                n, products=products, customers=customers, fail=_fails(n, fail_fraction)
            )
            await _one(client, api, body, result)
            advance()

    try:
        async with (
            api.async_client(max_connections=concurrency + 4) as client,
            anyio.create_task_group() as group,
        ):
            for n in range(count):
                group.start_soon(worker, client, n)
    except* httpx.TransportError as group:
        raise api.unreachable() from group
    except* ApiError as group:
        raise group.exceptions[0] from None
    result.elapsed = time.perf_counter() - started
    return result
