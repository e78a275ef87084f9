"""Many orders racing for scarce stock and limited balances: nothing is oversold or lost."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from bench.invariants import audit
from tests.support import final_order, order_body, place, query, quiescent, seed, wait_for

pytestmark = pytest.mark.anyio

PRODUCTS = {"lamp": (2_500, 7), "desk": (9_900, 3), "pen": (150, 20)}
CUSTOMERS = {f"c{n}": 20_000 for n in range(8)}


async def test_racing_orders_conserve_money_and_stock(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    await seed(client, PRODUCTS, CUSTOMERS)
    rng = random.Random(7)
    bodies = [
        order_body(
            rng.choice(list(CUSTOMERS)),
            {sku: rng.randint(1, 3) for sku in rng.sample(list(PRODUCTS), rng.randint(1, 2))},
        )
        for _ in range(120)
    ]
    # The test client answers one request at a time: place every order first
    # (each POST returns at once), so that all the sagas race in the background.
    order_ids = [await place(client, body) for body in bodies]
    results = [await final_order(client, order_id) for order_id in order_ids]
    await wait_for(lambda: quiescent(data_dir))

    reasons = {str(r["reason"]).split(":")[0] for r in results if r["status"] == "CANCELLED"}
    assert {"payment failed", "stock failed"} <= reasons, "the race should exhaust stock and money"
    assert any(r["status"] == "COMPLETED" for r in results)
    assert (
        audit(
            data_dir,
            initial_stock={sku: stock for sku, (_, stock) in PRODUCTS.items()},
            initial_balance=CUSTOMERS,
        )
        == []
    )
    sold = dict(query(data_dir, "inventory", "SELECT sku, stock FROM products"))
    assert all(n >= 0 for n in sold.values())
    completed = [r for r in results if r["status"] == "COMPLETED"]
    for sku, (_, stock) in PRODUCTS.items():
        ordered = sum(
            item["quantity"] for r in completed for item in r["items"] if item["sku"] == sku
        )
        assert ordered == stock - sold[sku] <= stock
