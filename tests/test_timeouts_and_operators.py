"""Step timeouts, retries, the saga deadline, and an operator's retry and abort."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar

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
from tests.transports import LosingTransport

pytestmark = pytest.mark.anyio

PRODUCTS = {"mug": (1200, 10)}
CUSTOMERS = {"ada": 10_000}

# What carries the payment step to the payment module in each mode.
PAYMENT_TRIGGER = {"orchestration": "payment.ProcessPayment", "choreography": "order.OrderCreated"}


def _app(
    data_dir: Path, losses: dict[str, int], timeouts: str, saga: str = "orchestration"
) -> tuple[Litestar, LosingTransport]:
    transport = LosingTransport(InMemoryTransport(), losses)
    settings = Settings(data_dir=data_dir, timeouts=timeouts, saga=saga)
    return create_app(settings, transport=transport), transport


def _sent(data_dir: Path, type_name: str) -> list[str]:
    """Every message of this type the saga has seen (ids), per the audit trail."""
    rows = query(
        data_dir, "checkout", "SELECT message_id FROM timeline WHERE type = ?", (type_name,)
    )
    return [r[0] for r in rows]


def _audit(data_dir: Path) -> list[str]:
    stock = {sku: n for sku, (_, n) in PRODUCTS.items()}
    return audit(data_dir, initial_stock=stock, initial_balance=CUSTOMERS)


async def test_a_lost_command_is_sent_again_after_its_timeout_and_the_saga_completes(
    data_dir, saga_mode
):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, transport = _app(data_dir, {trigger: 1}, "step=0.5,attempts=3", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        await wait_for(lambda: quiescent(data_dir))
        timeline = (await client.get(f"/orders/{order['order_id']}/timeline")).json()

    assert order["status"] == "COMPLETED"
    assert len(transport.lost) == 1
    attempts = _sent(data_dir, trigger)
    assert len(attempts) == 2
    assert len(set(attempts)) == 2, "each attempt has its own id"
    assert [e["type"] for e in timeline].count(trigger) == 2
    assert _audit(data_dir) == []


async def test_a_step_that_never_answers_is_compensated_after_its_attempts(data_dir, saga_mode):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, _ = _app(data_dir, {trigger: -1}, "step=0.1,attempts=2", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        await wait_for(lambda: quiescent(data_dir))

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "payment timed out after 2 attempts"
    assert len(_sent(data_dir, trigger)) == 2
    # The step in flight is compensated too: its refund leaves a tombstone.
    assert query(data_dir, "payment", "SELECT status FROM payments") == [("VOIDED",)]
    assert query(data_dir, "inventory", "SELECT count(*) FROM reservation_lines") == [(0,)]
    assert _audit(data_dir) == []


async def test_the_whole_saga_deadline_aborts_a_saga_that_runs_too_long(data_dir, saga_mode):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, _ = _app(data_dir, {trigger: -1}, "step=30,attempts=5,saga=0.3", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "saga deadline exceeded"


async def test_a_pending_timer_survives_a_restart_and_fires_once(data_dir, saga_mode):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, _ = _app(data_dir, {trigger: -1}, "step=2,attempts=3", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await wait_for(lambda: len(_sent(data_dir, trigger)) == 1)
    # Stopped before the timeout; a new process on the same files takes it over.
    app, _ = _app(data_dir, {}, "step=2,attempts=3", saga_mode)
    async with admin_client(app) as client:
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir))

    assert order["status"] == "COMPLETED"
    assert len(_sent(data_dir, trigger)) == 2
    assert _audit(data_dir) == []


async def test_an_operator_abort_compensates_and_is_safe_to_repeat(data_dir, saga_mode):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, _ = _app(data_dir, {trigger: -1}, "step=60", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await wait_for(lambda: len(_sent(data_dir, trigger)) == 1)
        first = await client.post(f"/sagas/{order_id}/abort", json={"reason": "customer called"})
        second = await client.post(f"/sagas/{order_id}/abort")
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir))
        timeline = (await client.get(f"/orders/{order_id}/timeline")).json()
        unknown = await client.post("/sagas/nope/abort")

    assert (first.status_code, second.status_code, unknown.status_code) == (202, 202, 404)
    assert order["status"] == "CANCELLED"
    assert order["reason"] == "customer called"
    assert [e["type"] for e in timeline].count("checkout.AbortSaga") == 2
    assert [e["type"] for e in timeline].count("order.OrderCancelled") == 1
    assert _audit(data_dir) == []


async def test_an_operator_abort_after_completion_changes_nothing(data_dir, saga_mode):
    app, _ = _app(data_dir, {}, "step=60", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await final_order(client, order_id)
        assert (await client.post(f"/sagas/{order_id}/abort")).status_code == 202
        await wait_for(lambda: quiescent(data_dir))
        order = (await client.get(f"/orders/{order_id}")).json()

    assert order["status"] == "COMPLETED"
    assert _audit(data_dir) == []


async def test_an_operator_retry_sends_the_stuck_step_again(data_dir, saga_mode):
    trigger = PAYMENT_TRIGGER[saga_mode]
    app, _ = _app(data_dir, {trigger: 1}, "step=60", saga_mode)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await wait_for(lambda: len(_sent(data_dir, trigger)) == 1)
        assert (await client.post(f"/sagas/{order_id}/retry")).status_code == 202
        order = await final_order(client, order_id)

        # The order module tells of the end first; the saga's record (the tracker, in
        # choreography) learns of it from the bus a moment later.
        async def saga_finished() -> bool:
            return bool((await client.get(f"/sagas/{order_id}")).json()["status"] == "COMPLETED")

        await wait_for(saga_finished, what="the saga's record ends")
        # A finished saga has nothing to retry: 409, and nothing is sent.
        again = await client.post(f"/sagas/{order_id}/retry")
        assert again.status_code == 409
        assert again.json()["detail"].startswith("cannot retry a COMPLETED saga")
        await wait_for(lambda: quiescent(data_dir))

    assert order["status"] == "COMPLETED"
    assert len(_sent(data_dir, trigger)) == 2
    assert _audit(data_dir) == []


async def test_an_abort_racing_the_shipment_undoes_it_because_the_orders_lock_decides(
    data_dir, saga_mode
):
    """The abort takes the pivot's lock (the order's row) before anything is undone: with the
    lock taken the order can no longer complete, so a shipment scheduled meanwhile is
    cancelled too, never kept for an order that ends cancelled."""
    settings = Settings(
        data_dir=data_dir,
        saga=saga_mode,
        timeouts="step=60",
        chaos="inventory.StockReserved:delay=1;delay_s=0.5",
    )
    async with admin_client(create_app(settings)) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        # Charged, and the reservation is on its way (held back): abort now.
        await wait_for(lambda: bool(query(data_dir, "payment", "SELECT 1 FROM ledger")))
        assert (await client.post(f"/sagas/{order_id}/abort")).status_code == 202
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir))

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "aborted by operator"
    assert (
        query(data_dir, "shipping", "SELECT status FROM shipments WHERE status = 'SCHEDULED'") == []
    )
    assert _audit(data_dir) == []
