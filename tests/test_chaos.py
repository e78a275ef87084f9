"""Each fault the chaos plan injects, alone, costs no order and no invariant."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.invariants import audit
from bus.chaos import ChaosTransport
from main import Settings, create_app
from tests.support import (
    admin_client,
    final_order,
    order_body,
    place,
    query,
    quiescent,
    seed,
    wait_for,
)

pytestmark = pytest.mark.anyio

PRODUCTS = {"lamp": (2_500, 6), "pen": (150, 30)}
CUSTOMERS = {f"c{n}": 9_000 for n in range(5)}


@pytest.mark.parametrize(
    ("chaos", "evidence"),
    [
        ("duplicate=0.3", "duplicates"),
        ("delay=0.3,delay_s=0.05", "delayed"),
        ("exception=0.2", "retried"),
        ("hang=0.1,hang_s=0.02", "retried"),
    ],
)
async def test_orders_survive_injected_faults(
    data_dir: Path, saga_mode: str, chaos: str, evidence: str | None
) -> None:
    settings = Settings(
        data_dir=data_dir, saga=saga_mode, chaos=chaos, chaos_seed=11,
        retry="attempts=8,base=0.005,cap=0.05", timeouts="step=2,attempts=5",
    )  # fmt: skip
    rng = random.Random(3)
    bodies = [
        order_body(rng.choice(list(CUSTOMERS)), {rng.choice(list(PRODUCTS)): rng.randint(1, 3)},
                   country=rng.choice(["DE", "DE", "DE", "AQ"]))
        for _ in range(30)
    ]  # fmt: skip
    app = create_app(settings)
    transport = app.state.system.transport
    assert isinstance(transport, ChaosTransport)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        # Faults hit the catalog's copy in the order module too: let it settle.
        await wait_for(lambda: quiescent(data_dir))
        # All placed first, so that the sagas run side by side.
        order_ids = [await place(client, body) for body in bodies]
        statuses = [(await final_order(client, oid))["status"] for oid in order_ids]
        await wait_for(lambda: quiescent(data_dir), deadline=30)

    assert len(statuses) == 30
    assert "COMPLETED" in statuses
    stock = {sku: n for sku, (_, n) in PRODUCTS.items()}
    assert audit(data_dir, initial_stock=stock, initial_balance=CUSTOMERS) == []
    if evidence == "retried":
        retried = sum(
            query(data_dir, db, "SELECT count(*) FROM dead_letter WHERE status='DELIVERED'")[0][0]
            for db in ("order", "payment", "inventory", "shipping", "checkout")
        )
        assert retried > 0, "the fault should have been hit and retried"
    if evidence == "duplicates":
        assert transport.injected["duplicate"] > 0, "the transport should have duplicated some"
        assert transport.injected["delay"] == 0
    if evidence == "delayed":
        assert transport.injected["delay"] > 0, "the transport should have delayed some"
        assert transport.injected["duplicate"] == 0
