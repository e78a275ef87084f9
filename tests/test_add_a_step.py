"""Adding a step changes only the definition: a fraud check between payment and stock,
a test-only module, runs its success path and every compensation path in both saga
styles, with no change outside the tests (README, "How to add a step")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.invariants import audit
from main import Settings, create_app
from tests.fraud.flow import FLOW
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

PRODUCTS = {"mug": (1200, 10), "tea": (500, 3)}
CUSTOMERS = {"ada": 100_000, "bob": 1_000}


def drained(data_dir: Path) -> bool:
    fraud = query(data_dir, "fraud", "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")
    return quiescent(data_dir) and fraud == [(0,)]


def fraud_status(data_dir: Path, order_id: str) -> list[tuple[Any, ...]]:
    return query(data_dir, "fraud", "SELECT status FROM checks WHERE order_id = ?", (order_id,))


async def run(
    data_dir: Path, saga_mode: str, body: dict[str, Any], *, chaos: str = "", abort: bool = False
) -> tuple[dict[str, Any], list[str]]:
    settings = Settings(data_dir=data_dir, saga=saga_mode, timeouts="step=60", chaos=chaos)
    async with admin_client(create_app(settings, flow=FLOW)) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, body)
        if abort:
            # The shipment is held back on its way: the abort meets the pivot.
            await wait_for(lambda: bool(fraud_status(data_dir, order_id)))
            assert (await client.post(f"/sagas/{order_id}/abort")).status_code == 202
        order = await final_order(client, order_id)
        await wait_for(lambda: drained(data_dir), what="outboxes drained")
        timeline = await client.get(f"/orders/{order_id}/timeline")
        types = [entry["type"] for entry in timeline.json()]
        await _check_labels(client, order_id)
    initial = {sku: stock for sku, (_, stock) in PRODUCTS.items()}
    assert audit(data_dir, initial_stock=initial, initial_balance=CUSTOMERS) == []
    return order, types


async def _check_labels(client: httpx.AsyncClient, order_id: str) -> None:
    """The timeline labels fraud messages with the new step, read from the definition."""
    for entry in (await client.get(f"/orders/{order_id}/timeline")).json():
        if entry["type"].startswith("fraud."):
            assert entry["step"] == "fraud"
            assert entry["role"] in ("action", "succeeded", "failed", "compensation",
                                     "compensated")  # fmt: skip


async def test_the_new_step_runs_between_payment_and_stock(data_dir, saga_mode):
    order, types = await run(data_dir, saga_mode, order_body("ada", {"mug": 1}))
    assert order["status"] == "COMPLETED"
    assert fraud_status(data_dir, order["order_id"]) == [("CLEARED",)]
    assert types.index("payment.PaymentCompleted") < types.index("fraud.FraudCleared")
    assert types.index("fraud.FraudCleared") < types.index("inventory.StockReserved")


async def test_a_payment_failure_never_reaches_the_new_step(data_dir, saga_mode):
    order, types = await run(data_dir, saga_mode, order_body("bob", {"mug": 1}))
    assert (order["status"], order["reason"]) == ("CANCELLED", "payment failed: insufficient_funds")
    assert fraud_status(data_dir, order["order_id"]) == []
    assert not any(t.startswith("fraud.") for t in types)


async def test_the_new_steps_failure_refunds_and_cancels(data_dir, saga_mode):
    order, _ = await run(data_dir, saga_mode, order_body("ada", {"mug": 5}))  # 6000 > 5000
    assert (order["status"], order["reason"]) == ("CANCELLED", "fraud failed: amount_too_high")
    assert fraud_status(data_dir, order["order_id"]) == [("SUSPECTED",)]
    assert query(data_dir, "payment", "SELECT kind FROM ledger ORDER BY kind") == [
        ("CHARGE",), ("REFUND",),
    ]  # fmt: skip


async def test_a_stock_failure_revokes_the_clearance_then_refunds(data_dir, saga_mode):
    order, types = await run(data_dir, saga_mode, order_body("ada", {"tea": 4}))
    assert (order["status"], order["reason"]) == ("CANCELLED", "stock failed: insufficient_stock")
    assert fraud_status(data_dir, order["order_id"]) == [("REVOKED",)]
    assert types.index("fraud.ClearanceRevoked") < types.index("payment.PaymentRefunded")


async def test_a_shipping_failure_undoes_every_step_last_first(data_dir, saga_mode):
    body = order_body("ada", {"mug": 1}, country="AQ")
    order, types = await run(data_dir, saga_mode, body)
    assert (order["status"], order["reason"]) == (
        "CANCELLED", "shipping failed: country_not_served"
    )  # fmt: skip
    assert fraud_status(data_dir, order["order_id"]) == [("REVOKED",)]
    undone = [t for t in types if t in (
        "inventory.StockReleased", "fraud.ClearanceRevoked", "payment.PaymentRefunded",
        "order.OrderCancelled",
    )]  # fmt: skip
    assert undone == [
        "inventory.StockReleased", "fraud.ClearanceRevoked", "payment.PaymentRefunded",
        "order.OrderCancelled",
    ]  # fmt: skip


async def test_a_failed_pivot_undoes_the_new_step_too(data_dir, saga_mode):
    order, _ = await run(
        data_dir, saga_mode, order_body("ada", {"mug": 1}),
        chaos="inventory.StockReserved:delay=1;delay_s=0.5", abort=True,
    )  # fmt: skip
    assert (order["status"], order["reason"]) == ("CANCELLED", "aborted by operator")
    assert fraud_status(data_dir, order["order_id"]) == [("REVOKED",)]
    assert (
        query(data_dir, "shipping", "SELECT status FROM shipments WHERE status = 'SCHEDULED'") == []
    )
