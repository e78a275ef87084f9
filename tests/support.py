"""Helpers shared by the tests: a catalog to seed, orders to place, conditions to wait on."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from bench.invariants import MODULES, unrecorded
from bench.orders import ADDRESS, order_body

__all__ = [
    "ADDRESS",
    "ADMIN",
    "ADMIN_TOKEN",
    "DB_NAMES",
    "Anonymous",
    "admin_client",
    "final_order",
    "order_body",
    "place",
    "query",
    "quiescent",
    "seed",
    "wait_for",
]

DB_NAMES = MODULES

# conftest.py puts it in SAGA_ADMIN_TOKEN, so that every app the tests start,
# in process or as a subprocess, checks this one.
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def admin_client(app: Litestar) -> AsyncTestClient[Litestar]:
    """A test client that sends the admin token with every request."""
    client: AsyncTestClient[Litestar] = AsyncTestClient(app=app)
    client.headers.update(ADMIN)
    return client


class Anonymous:
    """Requests through an admin client with its token taken off (``headers`` may add one)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        request = self.client.build_request(method, url, **kwargs)
        del request.headers["authorization"]
        request.headers.update(headers or {})
        return await self.client.send(request)


async def seed(
    client: httpx.AsyncClient,
    products: Mapping[str, tuple[int, int]],
    customers: Mapping[str, int],
) -> None:
    """Create products ``{sku: (price_cents, stock)}`` and customers ``{id: balance_cents}``."""
    for sku, (price, stock) in products.items():
        response = await client.put(
            f"/products/{sku}", json={"name": sku.title(), "price_cents": price, "stock": stock}
        )
        assert response.status_code == 200, response.text
    for customer_id, balance in customers.items():
        response = await client.put(
            f"/customers/{customer_id}",
            json={"name": customer_id.title(), "balance_cents": balance},
        )
        assert response.status_code == 200, response.text


async def place(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    response = await client.post("/orders", json=body, headers=headers)
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    deadline: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail after ``deadline`` seconds."""
    with anyio.fail_after(deadline):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


async def final_order(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    """The order once it is COMPLETED or CANCELLED (the API's long poll)."""
    with anyio.fail_after(20):
        while True:
            response = await client.get(f"/orders/{order_id}", params={"wait": 5})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] != "PENDING":
                return body


def query(data_dir: Path, db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read one module's database directly (tests only)."""
    with closing(sqlite3.connect(f"file:{data_dir / f'{db}.sqlite3'}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def quiescent(data_dir: Path) -> bool:
    """No order pending, every outbox delivered, no message waiting for a retry, and every
    saga message in its timeline (in choreography nothing else waits for the tracker)."""
    if query(data_dir, "order", "SELECT count(*) FROM orders WHERE status = 'PENDING'")[0][0]:
        return False
    return not unrecorded(data_dir) and all(
        query(data_dir, name, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")[0][0] == 0
        and query(data_dir, name, "SELECT count(*) FROM dead_letter WHERE status = 'RETRYING'")[0][
            0
        ]
        == 0
        for name in DB_NAMES
    )
