"""Every message may arrive twice; each still has its effect exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.invariants import audit
from bus.memory import InMemoryTransport
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
from tests.transports import DuplicatingTransport

pytestmark = pytest.mark.anyio

PRODUCTS = {"mug": (1200, 10), "tea": (500, 3)}
CUSTOMERS = {"ada": 100_000, "bob": 1_000}


async def test_every_message_delivered_twice_has_one_effect(data_dir: Path, saga_mode: str) -> None:
    transport = DuplicatingTransport(InMemoryTransport())
    app = create_app(Settings(data_dir=data_dir, saga=saga_mode), transport=transport)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        bodies = [
            order_body("ada", {"mug": 1}),  # completes
            order_body("bob", {"mug": 1}),  # payment fails
            order_body("ada", {"tea": 5}),  # stock fails: refund, cancel
            order_body("ada", {"tea": 1}, country="AQ"),  # shipping fails: release, refund, cancel
        ]
        orders = [await place(client, body) for body in bodies]
        statuses = [(await final_order(client, oid))["status"] for oid in orders]
        await wait_for(lambda: quiescent(data_dir))

    assert statuses == ["COMPLETED", "CANCELLED", "CANCELLED", "CANCELLED"]
    assert transport.redelivered > 0
    delivered_types = {
        t
        for name in ("order", "payment", "inventory", "shipping", "checkout")
        for (t,) in query(data_dir, name, "SELECT DISTINCT type FROM outbox")
    }
    # Every kind of message the saga uses went through the duplicating bus.
    events = {
        "order.OrderCreated", "payment.PaymentCompleted", "payment.PaymentFailed",
        "inventory.StockReserved", "inventory.StockFailed", "inventory.StockReleased",
        "payment.PaymentRefunded", "shipping.ShipmentScheduled", "shipping.ShipmentFailed",
        "order.OrderCancelled", "order.OrderCompleted",
    }  # fmt: skip
    commands = {
        "payment.ProcessPayment", "inventory.ReserveStock", "inventory.ReleaseStock",
        "payment.RefundPayment", "shipping.ScheduleShipment", "order.CancelOrder",
        "order.CompleteOrder",
    }  # fmt: skip
    assert events <= delivered_types
    if saga_mode == "orchestration":
        assert commands <= delivered_types
    assert (
        audit(
            data_dir,
            initial_stock={sku: stock for sku, (_, stock) in PRODUCTS.items()},
            initial_balance=CUSTOMERS,
        )
        == []
    )
    assert query(data_dir, "payment", "SELECT count(*) FROM ledger WHERE kind='CHARGE'") == [(3,)]
    assert query(data_dir, "payment", "SELECT count(*) FROM ledger WHERE kind='REFUND'") == [(2,)]
    assert query(
        data_dir, "shipping", "SELECT count(*) FROM shipments WHERE status='SCHEDULED'"
    ) == [(1,)]
