"""Every input limit, at both of its edges: the last value in is accepted, the first out
gets 400 or 413 naming the field, and writes nothing (``web/limits.py`` holds them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import order_body, query, wait_for
from tests.test_http_errors import (
    Snapshot,
    assert_names,
    assert_wrote_nothing,
    problem,
    raw_json,
    settled,
)
from web.limits import MAX_BODY_BYTES, MAX_CENTS

pytestmark = pytest.mark.anyio

LONG_ID = "i" * 64
PRODUCT = {"name": "Mug", "price_cents": 100, "stock": 1_000_000}
ACCOUNT = {"name": "Ada", "balance_cents": MAX_CENTS}


@pytest.fixture
def saga_mode() -> str:
    return "orchestration"  # the edge does not depend on the saga's style


@pytest.fixture
async def seeded(client: httpx.AsyncClient, data_dir: Path) -> Snapshot:
    for sku in ("mug", LONG_ID, "a", "A.b_c-9"):
        assert (await client.put(f"/products/{sku}", json=PRODUCT)).status_code == 200
    for customer in ("ada", LONG_ID, "b"):
        assert (await client.put(f"/customers/{customer}", json=ACCOUNT)).status_code == 200
    return await settled(data_dir)


def order(**changes: Any) -> dict[str, Any]:
    """A valid order with top-level, item (``quantity``, ``sku``) or address fields changed."""
    body = order_body("ada", {"mug": 1})
    for key, value in changes.items():
        if key in ("quantity", "sku"):
            body["items"][0][key] = value
        elif key in body:
            body[key] = value
        else:
            body["shipping_address"][key] = value
    return body


def lines(n: int) -> dict[str, Any]:
    return order(items=[{"sku": "mug", "quantity": 1}] * n)


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON padded with whitespace to exactly ``size`` bytes."""
    text = json.dumps(body).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


def nested(depth: int) -> bytes:
    return b'{"customer_id": ' + b"[" * depth + b"]" * depth + b"}"


# (id, request, rejected with, field named); a None status means accepted.
Case = tuple[str, dict[str, Any], int | None, str]
ORDER_CASES: list[Case] = [
    ("lines-1", {"json": lines(1)}, None, ""),
    ("lines-100", {"json": lines(100)}, None, ""),
    ("lines-0", {"json": lines(0)}, 400, "items"),
    ("lines-101", {"json": lines(101)}, 400, "items"),
    ("quantity-1", {"json": order(quantity=1)}, None, ""),
    ("quantity-1000", {"json": order(quantity=1000)}, None, ""),
    ("quantity-0", {"json": order(quantity=0)}, 400, "quantity"),
    ("quantity-1001", {"json": order(quantity=1001)}, 400, "quantity"),
    ("sku-1-char", {"json": order(sku="a")}, None, ""),
    ("sku-64-chars", {"json": order(sku=LONG_ID)}, None, ""),
    ("sku-every-allowed-kind", {"json": order(sku="A.b_c-9")}, None, ""),
    ("sku-empty", {"json": order(sku="")}, 400, "sku"),
    ("sku-65-chars", {"json": order(sku="i" * 65)}, 400, "sku"),
    ("sku-colon", {"json": order(sku="a:b")}, 400, "sku"),
    ("sku-slash", {"json": order(sku="a/b")}, 400, "sku"),
    ("sku-non-ascii", {"json": order(sku="tasse-é")}, 400, "sku"),
    ("sku-trailing-newline", {"json": order(sku="mug\n")}, 400, "sku"),
    ("customer-1-char", {"json": order(customer_id="b")}, None, ""),
    ("customer-64-chars", {"json": order(customer_id=LONG_ID)}, None, ""),
    ("customer-empty", {"json": order(customer_id="")}, 400, "customer_id"),
    ("customer-65-chars", {"json": order(customer_id="i" * 65)}, 400, "customer_id"),
    ("name-1-char", {"json": order(name="A")}, None, ""),
    ("name-200-chars", {"json": order(name="n" * 200)}, None, ""),
    ("name-any-script", {"json": order(name="Zoë Ōtsuka 東京")}, None, ""),
    ("name-empty", {"json": order(name="")}, 400, "name"),
    ("name-201-chars", {"json": order(name="n" * 201)}, 400, "name"),
    ("name-tab", {"json": order(name="Ada\tL")}, 400, "name"),
    ("name-trailing-newline", {"json": order(name="Ada\n")}, 400, "name"),
    ("line1-nul", {"json": order(line1="1 Main\x00St")}, 400, "line1"),
    ("line1-201-chars", {"json": order(line1="l" * 201)}, 400, "line1"),
    ("city-del", {"json": order(city="Berlin\x7f")}, 400, "city"),
    ("city-c1-control", {"json": order(city="Berlin\x85")}, 400, "city"),
    ("postal-code-200-chars", {"json": order(postal_code="1" * 200)}, None, ""),
    ("postal-code-201-chars", {"json": order(postal_code="1" * 201)}, 400, "postal_code"),
    ("country-AD", {"json": order(country="AD")}, None, ""),
    ("country-ZW", {"json": order(country="ZW")}, None, ""),
    ("country-unassigned-ZZ", {"json": order(country="ZZ")}, 400, "country"),
    ("country-lowercase", {"json": order(country="de")}, 400, "country"),
    ("country-alpha-3", {"json": order(country="DEU")}, 400, "country"),
    ("key-1-char", {"json": order(), "headers": {"Idempotency-Key": "k"}}, None, ""),
    ("key-200-chars", {"json": order(), "headers": {"Idempotency-Key": "k" * 200}}, None, ""),
    ("key-visible-ascii", {"json": order(), "headers": {"Idempotency-Key": "!~az09"}}, None, ""),
    ("key-empty", {"json": order(), "headers": {"Idempotency-Key": ""}}, 400, "idempotency_key"),
    ("key-201", {"json": order(), "headers": {"Idempotency-Key": "k" * 201}}, 400,
     "idempotency_key"),
    ("key-space", {"json": order(), "headers": {"Idempotency-Key": "a b"}}, 400, "idempotency_key"),
    ("key-latin-1", {"json": order(), "headers": {"Idempotency-Key": "clé".encode("latin-1")}},
     400, "idempotency_key"),
    ("body-64-kib", raw_json(padded(order(), MAX_BODY_BYTES)), None, ""),
    ("body-64-kib-plus-1", raw_json(padded(order(), MAX_BODY_BYTES + 1)), 413, "Too Large"),
    ("nesting-32", raw_json(nested(31)), 400, "customer_id"),
    ("nesting-33", raw_json(nested(32)), 400, "nested deeper than 32"),
    ("nesting-20000", raw_json(nested(20_000)), 400, "nested deeper than 32"),
    ("brackets-in-strings-do-not-nest", {"json": order(name="[{" * 100)}, None, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "status", "field"), [pytest.param(*c[1:], id=c[0]) for c in ORDER_CASES]
)
async def test_place_order_accepts_the_edge_and_rejects_one_past_it_naming_the_field(
    client, data_dir, seeded, request_, status, field
):
    response = await client.post("/orders", **request_)

    if status is None:
        assert response.status_code == 202, response.text
    else:
        assert_names(problem(response, status), field)
        assert_wrote_nothing(data_dir, seeded)


PUT_CASES: list[Case] = [
    ("product-price-0", {"json": {**PRODUCT, "price_cents": 0}}, None, ""),
    ("product-price-max", {"json": {**PRODUCT, "price_cents": MAX_CENTS}}, None, ""),
    ("product-price-neg", {"json": {**PRODUCT, "price_cents": -1}}, 400, "price_cents"),
    ("product-price-max+1", {"json": {**PRODUCT, "price_cents": MAX_CENTS + 1}}, 400,
     "price_cents"),
    ("product-stock-max", {"json": {**PRODUCT, "stock": MAX_CENTS}}, None, ""),
    ("product-stock-max+1", {"json": {**PRODUCT, "stock": MAX_CENTS + 1}}, 400, "stock"),
    ("product-name-200", {"json": {**PRODUCT, "name": "n" * 200}}, None, ""),
    ("product-name-201", {"json": {**PRODUCT, "name": "n" * 201}}, 400, "name"),
    ("product-name-newline", {"json": {**PRODUCT, "name": "Mug\nMug"}}, 400, "name"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "status", "field"), [pytest.param(*c[1:], id=c[0]) for c in PUT_CASES]
)
async def test_put_product_accepts_the_edge_and_rejects_one_past_it_naming_the_field(
    client, data_dir, seeded, request_, status, field
):
    response = await client.put("/products/mug", **request_)

    if status is None:
        assert response.status_code == 200, response.text
        assert (await client.get("/products/mug")).json() == {"sku": "mug", **request_["json"]}
    else:
        assert_names(problem(response, status), field)
        assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("balance", "status"),
    [(0, None), (MAX_CENTS, None), (-1, 400), (MAX_CENTS + 1, 400)],
    ids=["0", "max", "neg", "max+1"],
)
async def test_put_customer_balance_accepts_0_to_10_12_cents_and_nothing_else(
    client, data_dir, seeded, balance, status
):
    response = await client.put("/customers/ada", json={**ACCOUNT, "balance_cents": balance})

    if status is None:
        assert response.status_code == 200, response.text
        assert query(data_dir, "payment", "SELECT balance_cents FROM accounts WHERE "
                     "customer_id = 'ada'") == [(balance,)]  # fmt: skip
    else:
        assert_names(problem(response, status), "balance_cents")
        assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("identifier", "status"),
    [
        ("z", None),
        ("z" * 64, None),
        ("Z.z_z-9", None),
        ("z" * 65, 400),
        ("z:z", 400),
        ("z%20z", 400),
        ("z%0A", 400),
    ],
    ids=["1-char", "64-chars", "allowed-kinds", "65-chars", "colon", "space", "newline"],
)
@pytest.mark.parametrize("resource", ["products", "customers"])
async def test_ids_in_paths_are_1_to_64_characters_of_letters_digits_dot_underscore_dash(
    client, data_dir, seeded, resource, identifier, status
):
    body = PRODUCT if resource == "products" else ACCOUNT
    response = await client.put(f"/{resource}/{identifier}", json=body)

    if status is None:
        assert response.status_code == 200, response.text
    else:
        assert_names(problem(response, status), "sku" if resource == "products" else "customer_id")
        assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    "path",
    [
        "/orders/{id}",
        "/orders/{id}/timeline",
        "/products/{id}",
        "/customers/{id}",
    ],
)
async def test_reads_refuse_a_malformed_id_with_400_and_accept_a_64_character_one(
    client, data_dir, seeded, path
):
    too_long = await client.get(path.format(id="i" * 65))
    longest = await client.get(path.format(id=LONG_ID))

    assert_names(problem(too_long, 400), "length <= 64")
    assert longest.status_code in (200, 404), longest.text


@pytest.mark.parametrize(
    ("reason", "status"),
    [("r" * 200, 202), ("r" * 201, 400), ("", 400)],
    ids=["200-chars", "201-chars", "empty"],
)
async def test_a_customers_cancel_reason_is_1_to_200_printable_characters(
    client, data_dir, seeded, reason, status
):
    order_id = (await client.post("/orders", json=order())).json()["order_id"]
    before = await settled(data_dir)

    response = await client.post(f"/orders/{order_id}/cancel", json={"reason": reason})

    if status == 400:
        assert_names(problem(response, 400), "reason")
        assert_wrote_nothing(data_dir, before)
    else:
        assert response.status_code in (200, 202, 409), response.text


@pytest.mark.parametrize(
    ("reason", "status"),
    [("r" * 200, 202), ("r" * 201, 400), ("line\nbreak", 400)],
    ids=["200-chars", "201-chars", "control-char"],
)
async def test_an_abort_reason_is_1_to_200_printable_characters(
    client, data_dir, seeded, reason, status
):
    order_id = (await client.post("/orders", json=order())).json()["order_id"]

    async def known() -> bool:
        response: httpx.Response = await client.get(f"/orders/{order_id}/timeline")
        return response.status_code == 200

    await wait_for(known, what="checkout knows the saga")
    response = await client.post(f"/sagas/{order_id}/abort", json={"reason": reason})

    assert response.status_code == status, response.text
    if status == 400:
        assert_names(problem(response, 400), "reason")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/orders"), ("GET", "/sagas"), ("PUT", "/products/mug"), ("GET", "/orders/x")],
)
async def test_a_query_parameter_the_route_does_not_declare_is_refused_naming_it(
    client, data_dir, seeded, method, path
):
    body = {"POST": order(), "PUT": PRODUCT}.get(method)
    response = await client.request(method, path, params={"coupon": "FREE"}, json=body)

    assert_names(problem(response, 400), "coupon", "unknown query parameter")
    assert_wrote_nothing(data_dir, seeded)
