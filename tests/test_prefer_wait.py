"""``POST /orders`` with ``Prefer: wait=N`` (RFC 7240) answers once the order has ended."""

from __future__ import annotations

import pytest

from tests.support import final_order, order_body, seed
from web.http import prefer_wait
from web.limits import MAX_WAIT

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 0),
        ("", 0),
        ("wait=10", 10),
        ("respond-async, wait=5", 5),
        ("wait=5; foo=bar", 5),
        ("WAIT = 7", 7),
        ("wait=100000", MAX_WAIT),
        ("wait=", 0),
        ("wait=-1", 0),
        ("wait=1.5", 0),
        ("nowait=3", 0),
        ("handling=strict", 0),
    ],
)
def test_the_wait_preference_is_read_leniently_and_capped(header, seconds):
    assert prefer_wait(header) == seconds


async def test_the_answer_carries_the_end_of_the_order(client, saga_mode):
    await seed(client, {"mug": (1000, 10)}, {"ada": 10_000, "bob": 10})
    done = await client.post(
        "/orders", json=order_body("ada", {"mug": 1}), headers={"Prefer": "wait=20"}
    )
    assert done.status_code == 202, done.text
    assert done.headers["Preference-Applied"] == "wait=20"
    assert done.json()["status"] == "COMPLETED"
    assert "reason" not in done.json()
    assert done.headers["Location"] == f"/orders/{done.json()['order_id']}"

    poor = await client.post(
        "/orders", json=order_body("bob", {"mug": 1}), headers={"Prefer": "wait=20"}
    )
    assert poor.status_code == 202, poor.text
    view = await final_order(client, poor.json()["order_id"])
    assert poor.json()["status"] == view["status"] == "CANCELLED"
    assert poor.json()["reason"] == view["reason"]
    assert view["reason"]


async def test_without_the_preference_the_answer_does_not_wait(client, saga_mode):
    await seed(client, {"mug": (1000, 10)}, {"ada": 10_000})
    for headers in ({}, {"Prefer": "respond-async"}, {"Prefer": "wait=0"}):
        response = await client.post("/orders", json=order_body("ada", {"mug": 1}), headers=headers)
        assert response.status_code == 202, response.text
        assert response.json() == {"order_id": response.json()["order_id"], "status": "PENDING"}
        assert "Preference-Applied" not in response.headers
        assert (await final_order(client, response.json()["order_id"]))["status"] == "COMPLETED"
