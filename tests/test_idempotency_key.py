"""The Idempotency-Key header of POST /orders: a retried request never makes a second order."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from tests.support import final_order, order_body, place, query, seed
from tests.test_http_errors import assert_names, assert_wrote_nothing, problem, settled

pytestmark = pytest.mark.anyio

PRODUCTS = {"mug": (1200, 10), "tea": (500, 3)}
CUSTOMERS = {"ada": 10_000, "bob": 5_000}


async def post(client: httpx.AsyncClient, body: object, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return await client.post("/orders", json=body, headers=headers)


def order_count(data_dir) -> int:
    count: int = query(data_dir, "order", "SELECT count(*) FROM orders")[0][0]
    return count


async def test_same_key_and_same_body_return_the_same_order_and_store_it_once(client, data_dir):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 1})

    first = await post(client, body, "key-1")
    second = await post(client, body, "key-1")

    assert first.status_code == second.status_code == 202, (first.text, second.text)
    order_id = first.json()["order_id"]
    assert second.json()["order_id"] == order_id
    assert first.headers["location"] == second.headers["location"] == f"/orders/{order_id}"
    assert query(data_dir, "order", "SELECT order_id, idempotency_key FROM orders") == [
        (order_id, "key-1")
    ]
    assert (await final_order(client, order_id))["status"] == "COMPLETED"
    assert query(data_dir, "payment", "SELECT order_id, kind FROM ledger") == [(order_id, "CHARGE")]


async def test_replaying_a_key_after_the_order_completed_returns_it_without_charging_again(
    client, data_dir
):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 2})
    order_id = await place(client, body, **{"Idempotency-Key": "key-1"})
    assert (await final_order(client, order_id))["status"] == "COMPLETED"
    before = await settled(data_dir)

    replay = await post(client, body, "key-1")

    assert replay.status_code == 202, replay.text
    assert replay.json() == {"order_id": order_id, "status": "COMPLETED"}
    assert_wrote_nothing(data_dir, before)
    assert (await client.get("/customers/ada")).json()["balance_cents"] == 10_000 - 2400


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(order_body("ada", {"mug": 2}), id="other-quantity"),
        pytest.param(order_body("ada", {"tea": 1}), id="other-sku"),
        pytest.param(order_body("bob", {"mug": 1}), id="other-customer"),
        pytest.param(order_body("ada", {"mug": 1}, country="FR"), id="other-address"),
    ],
)
async def test_same_key_with_a_different_body_is_rejected_with_422_and_writes_nothing(
    client, data_dir, other
):
    await seed(client, PRODUCTS, CUSTOMERS)
    order_id = await place(client, order_body("ada", {"mug": 1}), **{"Idempotency-Key": "key-1"})
    await final_order(client, order_id)
    before = await settled(data_dir)

    response = await post(client, other, "key-1")

    assert_names(problem(response, 422), "Idempotency-Key", "key-1", "different request")
    assert response.json()["extra"] == {"idempotency_key": "key-1"}
    assert_wrote_nothing(data_dir, before)
    assert order_count(data_dir) == 1


async def test_same_key_with_the_same_fields_in_another_json_key_order_is_the_same_request(
    client, data_dir
):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 1})
    shuffled = {
        "shipping_address": dict(reversed(body["shipping_address"].items())),
        "items": [{"quantity": 1, "sku": "mug"}],
        "customer_id": "ada",
    }
    first = await post(client, body, "key-1")

    second = await client.post(
        "/orders",
        content=json.dumps(shuffled, indent=2).encode(),
        headers={"Idempotency-Key": "key-1", "content-type": "application/json"},
    )

    assert second.status_code == 202, second.text
    assert second.json()["order_id"] == first.json()["order_id"]
    assert order_count(data_dir) == 1


async def test_different_keys_create_different_orders(client, data_dir):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 1})

    first = await place(client, body, **{"Idempotency-Key": "key-1"})
    second = await place(client, body, **{"Idempotency-Key": "key-2"})

    assert first != second
    assert query(
        data_dir, "order", "SELECT idempotency_key FROM orders ORDER BY idempotency_key"
    ) == [("key-1",), ("key-2",)]
    for order_id in (first, second):
        assert (await final_order(client, order_id))["status"] == "COMPLETED"


async def test_orders_without_a_key_are_never_deduplicated(client, data_dir):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 1})

    first = await place(client, body)
    second = await place(client, body)

    assert first != second
    assert query(
        data_dir, "order", "SELECT count(*) FROM orders WHERE idempotency_key IS NULL"
    ) == [(2,)]


async def test_concurrent_requests_with_one_key_create_exactly_one_order(client, data_dir):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"mug": 1})
    responses: list[httpx.Response] = []

    async def send() -> None:
        responses.append(await post(client, body, "key-1"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(send)

    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert order_count(data_dir) == 1


async def test_a_key_whose_first_request_was_rejected_can_be_used_once_the_problem_is_fixed(
    client, data_dir
):
    await seed(client, PRODUCTS, CUSTOMERS)
    body = order_body("ada", {"cup": 1})

    rejected = await post(client, body, "key-1")
    assert_names(problem(rejected, 422), "unknown sku", "cup")
    assert order_count(data_dir) == 0
    await seed(client, {"cup": (300, 5)}, {})

    order_id = await place(client, body, **{"Idempotency-Key": "key-1"})

    assert (await final_order(client, order_id))["status"] == "COMPLETED"
    assert order_count(data_dir) == 1


@pytest.mark.parametrize(
    ("key", "named"),
    [
        pytest.param("k" * 201, "length <= 200", id="201-chars"),
        pytest.param("", "length >= 1", id="empty"),
    ],
)
async def test_a_malformed_idempotency_key_is_rejected_with_400_and_writes_nothing(
    client, data_dir, key, named
):
    await seed(client, PRODUCTS, CUSTOMERS)
    before = await settled(data_dir)

    response = await post(client, order_body("ada", {"mug": 1}), key)

    assert_names(problem(response, 400), "dempotency", named)
    assert_wrote_nothing(data_dir, before)
