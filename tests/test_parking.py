"""A compensation that cannot finish parks in plain sight: a payment account closed after the
charge refuses the refund; the saga retries a bounded number of times, then is PARKED (no
more work, still PARKED after a restart), and an operator's retry after the account reopens
finishes the undo with money conserved. Both styles, both buses."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bench.invariants import audit
from main import Settings, create_app
from tests.kafka_broker import ensure_broker
from tests.support import admin_client, final_order, order_body, place, query, seed, wait_for

pytestmark = pytest.mark.anyio

PRODUCTS = {"mug": (1200, 10), "tea": (500, 1)}
CUSTOMERS = {"ada": 10_000}
# The stock step waits on its way while the test closes the account after the charge.
STOCK_TRIGGER = {
    "orchestration": "inventory.ReserveStock",
    "choreography": "payment.PaymentCompleted",
}
UNDO_ATTEMPTS = 3
# Longer than the held-back stock step, so that no forward step is sent again meanwhile.
STEP = 1.0


def _settings(data_dir: Path, saga_mode: str, bus: str, chaos: str = "") -> Settings:
    kafka: dict[str, Any] = {}
    if bus == "kafka":
        kafka = {
            "kafka_bootstrap": ensure_broker(),
            "kafka_prefix": f"park-{uuid.uuid4().hex[:8]}.",
        }
    return Settings(
        data_dir=data_dir, saga=saga_mode, bus=bus, chaos=chaos,
        timeouts=f"step={STEP},cap={STEP},undo={UNDO_ATTEMPTS},attempts=3", **kafka,
    )  # fmt: skip


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def _saga(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/sagas/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _park_an_order(client: httpx.AsyncClient, data_dir: Path, saga_mode: str) -> str:
    """An order whose stock fails after its charge, with the account closed in between."""
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"tea": 2})  # only 1 tea: stock fails
    placed: list[str] = []

    async def accepted() -> bool:
        # Over Kafka the order module learns of the catalog a moment after the PUTs.
        response = await client.post("/orders", json=body)
        if response.status_code == 202:
            placed.append(response.json()["order_id"])
        return response.status_code == 202

    await wait_for(accepted, what="the order module knows the catalog")
    order_id = placed[0]
    await wait_for(lambda: bool(query(data_dir, "payment", "SELECT 1 FROM ledger")))
    closed = await client.patch("/customers/ada", json={"status": "closed"})
    assert closed.json() == {"customer_id": "ada", "name": "Ada", "balance_cents": 9_000,
                             "status": "closed"}  # fmt: skip

    async def parked() -> bool:
        response = await client.get(f"/sagas/{order_id}")  # 404 until the tracker has it
        return response.status_code == 200 and response.json()["status"] == "PARKED"

    await wait_for(parked, deadline=30, what="the saga parks")
    return order_id


async def _seen(client: httpx.AsyncClient, order_id: str, type_name: str) -> bool:
    timeline = (await client.get(f"/orders/{order_id}/timeline")).json()
    return any(entry["type"] == type_name for entry in timeline)


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)


def _work_done(data_dir: Path, order_id: str) -> tuple[Any, ...]:
    """What the system has done for the order: messages, undos tried, dead letters."""
    timeline = query(data_dir, "checkout", "SELECT count(*) FROM timeline WHERE saga_id = ?",
                     (order_id,))  # fmt: skip
    letters = [
        query(data_dir, name, "SELECT count(*) FROM dead_letter")
        for name in ("order", "payment", "inventory", "shipping", "checkout")
    ]
    return (timeline, letters)


async def test_a_refund_refused_by_a_closed_account_parks_and_resumes_after_it_reopens(
    data_dir: Path, saga_mode: str, bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    chaos = f"{STOCK_TRIGGER[saga_mode]}:delay=1;delay_s=0.5"
    caplog.set_level(logging.WARNING)
    settings = _settings(data_dir, saga_mode, bus, chaos)
    async with admin_client(create_app(settings)) as client:
        order_id = await _park_an_order(client, data_dir, saga_mode)

        saga = await _saga(client, order_id)
        steps = {s["name"]: s for s in saga["steps"]}
        assert (saga["style"], saga["definition_version"]) == (saga_mode, 1)
        assert steps["payment"]["outcome"] == "not undone"
        assert steps["payment"]["last_error"] == "account_closed"
        assert steps["stock"]["outcome"] == "failed"
        assert steps["stock"]["last_error"] == "insufficient_stock"

        async def listed() -> bool:
            found = (await client.get("/sagas", params={"status": "PARKED"})).json()
            return [s["order_id"] for s in found] == [order_id]

        await wait_for(listed, what="the tracker lists it as PARKED")
        # The customer is told the truth: not cancelled yet, and why.
        order = (await client.get(f"/orders/{order_id}")).json()

        async def told() -> bool:
            body = (await client.get(f"/orders/{order_id}")).json()
            return bool(body["reason"] == "compensation pending: payment")

        await wait_for(told, what="the order tells why it waits")
        assert order["status"] == "PENDING"

        async def refusals() -> int:
            timeline = (await client.get(f"/orders/{order_id}/timeline")).json()
            return [e["type"] for e in timeline].count("payment.RefundFailed")

        await wait_for(lambda: _seen(client, order_id, "checkout.SagaParked"))
        # One refusal per attempt (over Kafka, the last may still be on its way).
        await wait_for(lambda: _equals(refusals(), UNDO_ATTEMPTS), what="every refusal seen")
        assert any(
            r.levelno == logging.WARNING
            and order_id in r.getMessage()
            and "parked" in r.getMessage()
            for r in caplog.records
        )
        # Parked costs nothing: a few step timeouts later, nothing more was tried.
        before = _work_done(data_dir, order_id)
        await anyio.sleep(2.5 * STEP)
        assert _work_done(data_dir, order_id) == before

    # Still parked after a restart, and still idle.
    async with admin_client(create_app(_settings(data_dir, saga_mode, bus))) as client:
        assert (await _saga(client, order_id))["status"] == "PARKED"
        before = _work_done(data_dir, order_id)
        await anyio.sleep(2.5 * STEP)
        assert _work_done(data_dir, order_id) == before
        resolve = await client.post(f"/sagas/{order_id}/resolve", json={})
        assert resolve.status_code == 400  # the note is required

        assert (await client.patch("/customers/ada", json={"status": "open"})).status_code == 200
        assert (await client.post(f"/sagas/{order_id}/retry")).status_code == 202
        final = await final_order(client, order_id)

        async def compensated() -> bool:
            return bool((await _saga(client, order_id))["status"] == "COMPENSATED")

        await wait_for(compensated, what="the saga ends")
        assert (await client.post(f"/sagas/{order_id}/retry")).status_code == 409
        again = await client.post(f"/sagas/{order_id}/resolve", json={"note": "late"})
        assert again.status_code == 409
        types = [e["type"] for e in (await client.get(f"/orders/{order_id}/timeline")).json()]

    assert (final["status"], final["reason"]) == ("CANCELLED", "stock failed: insufficient_stock")
    assert "checkout.SagaResumed" in types
    assert query(data_dir, "payment", "SELECT kind FROM ledger ORDER BY kind") == [
        ("CHARGE",), ("REFUND",),
    ]  # fmt: skip
    initial = {sku: n for sku, (_, n) in PRODUCTS.items()}
    assert audit(data_dir, initial_stock=initial, initial_balance=CUSTOMERS) == []


async def test_a_parked_saga_resolved_by_hand_ends_compensated_with_the_note(
    data_dir: Path, saga_mode: str
) -> None:
    chaos = f"{STOCK_TRIGGER[saga_mode]}:delay=1;delay_s=0.5"
    async with admin_client(create_app(_settings(data_dir, saga_mode, "memory", chaos))) as client:
        order_id = await _park_an_order(client, data_dir, saga_mode)
        note = "refunded by bank transfer, ticket 4711"
        too_long = await client.post(f"/sagas/{order_id}/resolve", json={"note": "x" * 501})
        assert too_long.status_code == 400
        resolved = await client.post(f"/sagas/{order_id}/resolve", json={"note": note})
        assert resolved.status_code == 202
        final = await final_order(client, order_id)

        async def finished() -> bool:
            return bool((await _saga(client, order_id))["status"] == "COMPENSATED")

        await wait_for(finished)
        saga = await _saga(client, order_id)

    assert final["status"] == "CANCELLED"
    assert saga["notes"] == [note]
    # The refund happened outside: the ledger keeps the charge, the note says why.
    assert query(data_dir, "payment", "SELECT kind FROM ledger") == [("CHARGE",)]
    assert query(
        data_dir, "inventory", "SELECT count(*) FROM reservations WHERE status = 'RESERVED'"
    ) == [(0,)]


async def test_resolve_and_retry_answer_409_for_a_saga_that_is_not_parked(
    data_dir: Path, saga_mode: str
) -> None:
    async with admin_client(create_app(Settings(data_dir=data_dir, saga=saga_mode))) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        await final_order(client, order_id)

        async def finished() -> bool:  # the saga's record learns of the end from the bus
            response = await client.get(f"/sagas/{order_id}")
            return response.status_code == 200 and response.json()["status"] == "COMPLETED"

        await wait_for(finished)
        resolve = await client.post(f"/sagas/{order_id}/resolve", json={"note": "n"})
        assert resolve.status_code == 409
        assert resolve.json()["detail"] == "cannot resolve a COMPLETED saga (only PARKED)"
        assert (await client.post("/sagas/nope/resolve", json={"note": "n"})).status_code == 404
        assert (await client.get("/sagas/nope")).status_code == 404


async def test_a_closed_account_refuses_charges_and_keeps_its_balance(
    data_dir: Path, saga_mode: str
) -> None:
    async with admin_client(create_app(Settings(data_dir=data_dir, saga=saga_mode))) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        assert (await client.patch("/customers/ada", json={"status": "closed"})).status_code == 200
        assert (await client.get("/customers/ada")).json()["status"] == "closed"
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        assert (order["status"], order["reason"]) == ("CANCELLED", "payment failed: account_closed")
        assert (await client.patch("/customers/ada", json={"status": "gone"})).status_code == 400
        assert (await client.patch("/customers/ada", json={"balance_cents": 1})).status_code == 400
        assert (await client.patch("/customers/nobody", json={"status": "open"})).status_code == 404
        reopened = await client.patch("/customers/ada", json={"status": "open"})
        assert reopened.json()["balance_cents"] == 10_000
        # PUT keeps its meaning: it sets everything, status open unless said otherwise.
        put = await client.put("/customers/ada", json={"name": "Ada", "balance_cents": 5})
        assert put.json()["status"] == "open"
