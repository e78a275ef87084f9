"""Every path of the checkout saga, checked against each module's own database."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.invariants import audit
from tests.support import final_order, order_body, place, query, quiescent, seed, wait_for

pytestmark = pytest.mark.anyio

PRODUCTS = {"mug": (1200, 10), "tea": (500, 3)}
CUSTOMERS = {"ada": 10_000, "bob": 1_000}


async def checkout(
    client: httpx.AsyncClient, data_dir: Path, body: dict[str, object]
) -> dict[str, object]:
    await seed(client, PRODUCTS, CUSTOMERS)
    order = await final_order(client, await place(client, body))
    await wait_for(lambda: quiescent(data_dir), what="outboxes drained")
    assert (
        audit(
            data_dir,
            initial_stock={sku: stock for sku, (_, stock) in PRODUCTS.items()},
            initial_balance=CUSTOMERS,
        )
        == []
    )
    return order


async def test_successful_checkout_charges_reserves_ships_and_completes(client, data_dir):
    order = await checkout(client, data_dir, order_body("ada", {"mug": 2, "tea": 1}))
    oid = order["order_id"]

    assert order["status"] == "COMPLETED"
    assert order["total_cents"] == 2 * 1200 + 500
    assert query(
        data_dir, "payment", "SELECT balance_cents FROM accounts WHERE customer_id='ada'"
    ) == [(10_000 - 2900,)]
    assert query(
        data_dir, "payment", "SELECT kind, amount_cents FROM ledger WHERE order_id=?", (oid,)
    ) == [("CHARGE", 2900)]
    assert query(data_dir, "inventory", "SELECT sku, stock FROM products ORDER BY sku") == [
        ("mug", 8),
        ("tea", 2),
    ]
    assert query(
        data_dir, "shipping", "SELECT status, country FROM shipments WHERE order_id=?", (oid,)
    ) == [("SCHEDULED", "DE")]
    assert (await client.get("/products/mug")).json()["stock"] == 8


async def test_payment_failure_cancels_the_order_and_touches_nothing_else(client, data_dir):
    order = await checkout(client, data_dir, order_body("bob", {"mug": 1}))  # 1200 > 1000
    oid = order["order_id"]

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "payment failed: insufficient_funds"
    assert query(
        data_dir, "payment", "SELECT balance_cents FROM accounts WHERE customer_id='bob'"
    ) == [(1_000,)]
    assert query(data_dir, "payment", "SELECT count(*) FROM ledger") == [(0,)]
    assert query(
        data_dir, "inventory", "SELECT count(*) FROM reservations WHERE order_id=?", (oid,)
    ) == [(0,)]
    assert query(data_dir, "shipping", "SELECT count(*) FROM shipments") == [(0,)]


async def test_stock_failure_refunds_the_payment_and_cancels_the_order(client, data_dir):
    order = await checkout(client, data_dir, order_body("ada", {"mug": 1, "tea": 4}))  # only 3 tea
    oid = order["order_id"]

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "stock failed: insufficient_stock"
    assert query(
        data_dir,
        "payment",
        "SELECT kind, amount_cents FROM ledger WHERE order_id=? ORDER BY kind",
        (oid,),
    ) == [
        ("CHARGE", 3200),
        ("REFUND", 3200),
    ]
    assert query(
        data_dir, "payment", "SELECT balance_cents FROM accounts WHERE customer_id='ada'"
    ) == [(10_000,)]
    assert query(data_dir, "inventory", "SELECT sku, stock FROM products ORDER BY sku") == [
        ("mug", 10),
        ("tea", 3),
    ]
    assert query(data_dir, "shipping", "SELECT count(*) FROM shipments") == [(0,)]


async def test_shipping_failure_releases_stock_refunds_and_cancels_in_reverse_order(
    client, data_dir, saga_mode
):
    order = await checkout(client, data_dir, order_body("ada", {"mug": 2}, country="AQ"))
    oid = order["order_id"]

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "shipping failed: country_not_served"
    assert query(
        data_dir, "inventory", "SELECT status FROM reservations WHERE order_id=?", (oid,)
    ) == [("RELEASED",)]
    assert query(data_dir, "inventory", "SELECT stock FROM products WHERE sku='mug'") == [(10,)]
    assert query(
        data_dir, "payment", "SELECT balance_cents FROM accounts WHERE customer_id='ada'"
    ) == [(10_000,)]
    assert query(data_dir, "shipping", "SELECT status FROM shipments WHERE order_id=?", (oid,)) == [
        ("FAILED",)
    ]

    timeline = (await client.get(f"/orders/{oid}/timeline")).json()
    undone = [e["type"] for e in timeline if e["compensation"] and e["kind"] == "event"]
    assert undone == ["inventory.StockReleased", "payment.PaymentRefunded", "order.OrderCancelled"]
    if saga_mode == "orchestration":
        assert [e["type"] for e in timeline if e["compensation"] and e["kind"] == "command"] == [
            "inventory.ReleaseStock",
            "payment.RefundPayment",
            "order.CancelOrder",
        ]


async def test_timeline_lists_every_step_in_causal_order_with_modules(client, data_dir, saga_mode):
    order = await checkout(client, data_dir, order_body("ada", {"tea": 1}))
    timeline = (await client.get(f"/orders/{order['order_id']}/timeline")).json()

    events = [
        ("order", "order.OrderCreated"),
        ("payment", "payment.PaymentCompleted"),
        ("inventory", "inventory.StockReserved"),
        ("shipping", "shipping.ShipmentScheduled"),
        ("order", "order.OrderCompleted"),
    ]
    if saga_mode == "choreography":
        assert [(e["module"], e["type"]) for e in timeline] == events
    else:
        commands = [
            ("checkout", "payment.ProcessPayment"),
            ("checkout", "inventory.ReserveStock"),
            ("checkout", "shipping.ScheduleShipment"),
            ("checkout", "order.CompleteOrder"),
        ]
        pairs = zip(commands, events[1:], strict=True)
        interleaved = [events[0]] + [x for pair in pairs for x in pair]
        assert [(e["module"], e["type"]) for e in timeline] == interleaved
    assert all(e["at"] for e in timeline)
    sagas = (await client.get("/sagas", params={"status": "COMPLETED"})).json()
    assert [s["order_id"] for s in sagas] == [order["order_id"]]
