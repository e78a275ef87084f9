"""Messages that keep failing, or cannot be read, become dead letters an operator can see,
replay or discard; they never hold up other orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.invariants import audit
from bus.messages import Envelope, Undecodable
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

PRODUCTS = {"mug": (1200, 10)}
RESERVE_TRIGGER = {
    "orchestration": "inventory.ReserveStock",
    "choreography": "payment.PaymentCompleted",
}
CUSTOMERS = {"ada": 10_000, "bob": 10_000}


async def test_a_failing_handler_becomes_a_dead_letter_that_a_replay_delivers_once(
    data_dir: Path, saga_mode: str
) -> None:
    settings = Settings(
        data_dir=data_dir,
        saga=saga_mode,
        # What makes inventory reserve: a command, or the payment event.
        chaos=f"{RESERVE_TRIGGER[saga_mode]}:exception=1",
        retry="attempts=2,base=0.01,cap=0.02",
        timeouts="step=60",
    )
    app = create_app(settings)
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))

        async def one_dead() -> bool:
            return len((await client.get("/dead-letters")).json()) == 1

        await wait_for(one_dead, what="a dead letter")
        (letter,) = (await client.get("/dead-letters")).json()
        assert letter["consumer"] == "inventory"
        assert letter["order_id"] == order_id
        assert letter["attempts"] == 2
        assert "injected failure" in letter["error"]

        # Another order is not held up by the first one's dead letter: it runs
        # until it meets the same fault, on its own.
        other = await place(client, order_body("bob", {"mug": 1}))
        await wait_for(lambda: _dead_count(data_dir) == 2)

        # The fault is fixed; the operator replays the first letter, twice.
        for consumer in app.state.system.consumers:
            consumer.chaos = None
        first = await client.post(f"/dead-letters/{letter['id']}/replay")
        again = await client.post(f"/dead-letters/{letter['id']}/replay")
        assert first.json()["status"] == "RETRYING"
        assert again.json()["status"] in ("RETRYING", "DELIVERED")
        assert (await final_order(client, order_id))["status"] == "COMPLETED"

        (second,) = (await client.get("/dead-letters")).json()
        discarded = await client.post(f"/dead-letters/{second['id']}/discard")
        assert discarded.json()["status"] == "DISCARDED"
        after = await client.post(f"/dead-letters/{letter['id']}/replay")
        assert after.json()["status"] == "DELIVERED"
        assert (await client.post("/dead-letters/inventory:999/replay")).status_code == 404
        assert (await client.get(f"/orders/{other}")).json()["status"] == "PENDING"

    assert query(
        data_dir, "payment", "SELECT count(*) FROM ledger WHERE order_id = ?", (order_id,)
    ) == [(1,)]
    assert query(data_dir, "inventory", "SELECT count(*) FROM reservations") == [(1,)]


def _dead_count(data_dir: Path) -> int:
    return int(
        query(data_dir, "inventory", "SELECT count(*) FROM dead_letter WHERE status='DEAD'")[0][0]
    )


async def test_an_undecodable_message_is_dead_lettered_at_once_and_others_flow(
    data_dir: Path, saga_mode: str
) -> None:
    app = create_app(Settings(data_dir=data_dir, saga=saga_mode))
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        # A product update written by some other build, that this one cannot read.
        garbage = Envelope(
            message_id="bad-1", type="inventory.ProductUpdated", version=1,
            correlation_id="mug", causation_id=None, source="inventory", occurred_at=0.0,
            payload=b'{"sku": 1}',
            message=Undecodable(correlation_id="mug", error="sku: expected str"),
        )  # fmt: skip
        app.state.system.transport.publish([garbage], lambda _: None)
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        await wait_for(lambda: quiescent(data_dir))
        letters = (await client.get("/dead-letters")).json()

    assert order["status"] == "COMPLETED"
    # Its subscriber, the order module, parked it at once (the tracker reads saga
    # messages only, not reference data).
    assert sorted((x["consumer"], x["message_id"], x["attempts"]) for x in letters) == [
        ("order", "bad-1", 1),
    ]
    assert all("sku: expected str" in x["error"] for x in letters)
    assert audit(data_dir, initial_stock={"mug": 10}) == ["order: 1 dead letters"]
