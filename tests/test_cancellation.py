"""A customer cancels an order while its saga runs: before the pivot it is undone (even a
step in flight), after it the answer is 409; bad input changes nothing. Both styles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.invariants import audit
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
CUSTOMERS = {"ada": 10_000}
# What carries each step to its module, held back so that the cancel meets it in flight.
TRIGGER = {
    ("payment", "orchestration"): "payment.ProcessPayment",
    ("payment", "choreography"): "order.OrderCreated",
    ("stock", "orchestration"): "inventory.ReserveStock",
    ("stock", "choreography"): "payment.PaymentCompleted",
}


def _audit(data_dir: Path) -> list[str]:
    stock = {sku: n for sku, (_, n) in PRODUCTS.items()}
    return audit(data_dir, initial_stock=stock, initial_balance=CUSTOMERS)


def _app(data_dir: Path, saga_mode: str, chaos: str = "") -> Any:
    return create_app(Settings(data_dir=data_dir, saga=saga_mode, timeouts="step=30",
                               chaos=chaos))  # fmt: skip


@pytest.mark.parametrize("in_flight", ["payment", "stock"])
async def test_a_cancel_before_the_pivot_undoes_everything_even_the_step_in_flight(
    data_dir: Path, saga_mode: str, in_flight: str
) -> None:
    chaos = f"{TRIGGER[(in_flight, saga_mode)]}:delay=1;delay_s=0.5"
    async with admin_client(_app(data_dir, saga_mode, chaos)) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 2}))
        response = await client.post(
            f"/orders/{order_id}/cancel", json={"reason": "changed my mind"}
        )
        assert response.status_code == 202, response.text
        pending = response.json()
        assert pending["status"] == "PENDING"
        assert pending["reason"] == "cancellation pending: cancelled by customer: changed my mind"
        again = await client.post(f"/orders/{order_id}/cancel")
        assert again.status_code in (200, 202)  # asking twice is harmless
        order = await final_order(client, order_id)
        await wait_for(lambda: quiescent(data_dir))
        repeated = await client.post(f"/orders/{order_id}/cancel")

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "cancelled by customer: changed my mind"
    assert (repeated.status_code, repeated.json()["status"]) == (200, "CANCELLED")
    # A charge that lands after the cancel is refunded; a reservation, released.
    assert query(data_dir, "payment", "SELECT balance_cents FROM accounts") == [(10_000,)]
    assert query(
        data_dir, "inventory", "SELECT count(*) FROM reservations WHERE status = 'RESERVED'"
    ) == [(0,)]
    assert _audit(data_dir) == []


async def test_a_cancel_after_the_pivot_is_refused_with_409(data_dir: Path, saga_mode: str) -> None:
    async with admin_client(_app(data_dir, saga_mode)) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        assert (await final_order(client, order_id))["status"] == "COMPLETED"
        response = await client.post(f"/orders/{order_id}/cancel", json={"reason": "too late"})
        await wait_for(lambda: quiescent(data_dir))

    assert response.status_code == 409
    assert response.json()["detail"] == "order is past the point of no return (complete)"
    assert query(data_dir, "order", "SELECT status, cancel_reason FROM orders") == [
        ("COMPLETED", None)
    ]
    assert _audit(data_dir) == []


async def test_cancelling_an_unknown_order_is_404(data_dir: Path, saga_mode: str) -> None:
    async with admin_client(_app(data_dir, saga_mode)) as client:
        response = await client.post("/orders/nope/cancel")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"reason": "' + b"x" * 201 + b'"}', "application/json"),
        (b'{"reason": ""}', "application/json"),
        (b'{"reason": 7}', "application/json"),
        (b'{"why": "no"}', "application/json"),
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
    ],
    ids=["too-long", "empty", "not-a-string", "unknown-field", "malformed", "not-an-object"],
)
async def test_a_bad_cancel_body_is_400_and_changes_nothing(
    data_dir: Path, saga_mode: str, body: bytes, content_type: str
) -> None:
    chaos = f"{TRIGGER[('payment', saga_mode)]}:delay=1;delay_s=0.3"
    async with admin_client(_app(data_dir, saga_mode, chaos)) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        order_id = await place(client, order_body("ada", {"mug": 1}))
        response = await client.post(
            f"/orders/{order_id}/cancel", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 400, response.text
        assert query(data_dir, "order", "SELECT cancel_reason FROM orders") == [(None,)]
        order = await final_order(client, order_id)
    assert order["status"] == "COMPLETED"
