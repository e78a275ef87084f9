"""Bad requests get a clear 4xx (never a 5xx) and write nothing to any module's database.

"Writes nothing" is checked on every row of every table of every module's SQLite
file: a snapshot taken once the system is quiet, compared with one taken right
after the bad request was answered.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import MutableMapping, MutableSequence
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support import (
    DB_NAMES,
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
CUSTOMERS = {"ada": 10_000}
MAX_BODY_BYTES = 64 * 1024

Snapshot = dict[str, dict[str, list[tuple[Any, ...]]]]


# -- helpers --------------------------------------------------------------------


def snapshot(data_dir: Path) -> Snapshot:
    """Every row of every table of every module's database, in a stable order."""
    state: Snapshot = {}
    for path in sorted(data_dir.glob("*.sqlite3")):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            state[path.stem] = {
                table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
                for table in tables
            }
    assert set(DB_NAMES) <= set(state), f"missing databases: {set(DB_NAMES) - set(state)}"
    return state


async def settled(data_dir: Path) -> Snapshot:
    """The snapshot once every outbox is delivered and nothing changes any more."""
    await wait_for(lambda: quiescent(data_dir), what="outboxes drained")
    with anyio.fail_after(10):
        previous = snapshot(data_dir)
        while True:
            await anyio.sleep(0.01)
            current = snapshot(data_dir)
            if current == previous:
                return current
            previous = current


def changes(before: Snapshot, after: Snapshot) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Rows added and removed, per ``db.table``; empty when nothing was written."""
    diff: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for db in sorted(set(before) | set(after)):
        tables = set(before.get(db, {})) | set(after.get(db, {}))
        for table in sorted(tables):
            old = before.get(db, {}).get(table, [])
            new = after.get(db, {}).get(table, [])
            added = [row for row in new if row not in old]
            removed = [row for row in old if row not in new]
            if added or removed:
                diff[f"{db}.{table}"] = {"added": added, "removed": removed}
    return diff


def assert_wrote_nothing(data_dir: Path, before: Snapshot) -> None:
    assert changes(before, snapshot(data_dir)) == {}


def problem(response: httpx.Response, status: int) -> str:
    """Check the error response's shape; return its description (detail plus extra)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    detail = body.get("detail")
    assert isinstance(detail, str), body
    assert detail.strip(), body
    parts = [detail]
    extra = body.get("extra")
    if isinstance(extra, list):
        parts += [f"{entry.get('key', '')}: {entry.get('message', '')}" for entry in extra]
    elif isinstance(extra, dict):
        parts += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(parts)


def assert_names(text: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not named in the error: {text!r}"


MISSING = object()


def valid_order() -> dict[str, Any]:
    return order_body("ada", {"mug": 1})


def order_with(path: str, value: Any) -> dict[str, Any]:
    """A valid order with the field at dotted ``path`` set to ``value`` (or removed)."""
    body = valid_order()
    *parents, leaf = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if isinstance(target, MutableSequence):
        target[int(leaf)] = value
    elif value is MISSING:
        assert isinstance(target, MutableMapping)
        del target[leaf]
    else:
        target[leaf] = value
    return body


def raw_json(content: bytes) -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": "application/json"}}


@pytest.fixture
async def seeded(client: httpx.AsyncClient, data_dir: Path) -> Snapshot:
    """Seed the catalog and customers; return the settled snapshot of every database."""
    await seed(client, PRODUCTS, CUSTOMERS)
    return await settled(data_dir)


# -- the helpers themselves -------------------------------------------------------


async def test_snapshot_sees_every_row_a_valid_order_writes(client, data_dir, seeded):
    order_id = await place(client, valid_order())
    assert (await final_order(client, order_id))["status"] == "COMPLETED"
    after = await settled(data_dir)

    written = changes(seeded, after)
    for table in ("order.orders", "order.order_items", "payment.ledger", "shipping.shipments"):
        assert written[table]["added"], f"{table} not seen changing"
    assert changes(after, await settled(data_dir)) == {}


# -- POST /orders: bodies that are not an order -------------------------------------


@pytest.mark.parametrize(
    ("content", "named"),
    [
        pytest.param(b"{not json", ("malformed",), id="malformed"),
        pytest.param(b'{"customer_id": "ada"', ("truncated",), id="truncated"),
        pytest.param(b"[1, 2]", ("Expected `object`, got `array`",), id="array"),
        pytest.param(b'"ada"', ("Expected `object`, got `str`",), id="string"),
        pytest.param(b"null", ("object",), id="null"),
    ],
)
async def test_order_body_that_is_not_json_or_not_an_object_is_rejected_with_400_and_writes_nothing(
    client, data_dir, seeded, content, named
):
    response = await client.post("/orders", **raw_json(content))

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)


async def test_empty_order_body_is_rejected_with_400_saying_the_body_is_missing_and_writes_nothing(
    client, data_dir, seeded
):
    response = await client.post("/orders", **raw_json(b""))

    text = problem(response, 400).lower()
    assert any(word in text for word in ("empty", "missing", "truncated", "object")), text
    assert_wrote_nothing(data_dir, seeded)


# -- POST /orders: fields missing, mistyped, unknown ----------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "customer_id",
        "items",
        "shipping_address",
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
        "items.0.sku",
        "items.0.quantity",
    ],
)
async def test_order_missing_a_required_field_is_rejected_with_400_naming_it_and_writes_nothing(
    client, data_dir, seeded, field
):
    response = await client.post("/orders", json=order_with(field, MISSING))

    leaf = field.rsplit(".", 1)[-1]
    assert_names(problem(response, 400), f"missing required field `{leaf}`")
    assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        pytest.param("customer_id", 123, "Expected `str`, got `int`", id="customer-int"),
        pytest.param(
            "items", {"sku": "mug", "quantity": 1}, "Expected `array`, got `object`", id="items-obj"
        ),
        pytest.param("items.0", "mug", "Expected `object`, got `str`", id="item-str"),
        pytest.param(
            "shipping_address", "1 Main St", "Expected `object`, got `str`", id="address-str"
        ),
        pytest.param("items.0.sku", 5, "Expected `str`, got `int`", id="sku-int"),
        pytest.param("items.0.quantity", 1.5, "Expected `int`, got `float`", id="quantity-float"),
        pytest.param("items.0.quantity", True, "Expected `int`, got `bool`", id="quantity-bool"),
        pytest.param("items.0.quantity", "1", "Expected `int`", id="quantity-str"),
        pytest.param(
            "shipping_address.postal_code", 10115, "Expected `str`, got `int`", id="postcode-int"
        ),
    ],
)
async def test_order_with_a_wrongly_typed_field_is_rejected_with_400_naming_it_and_writes_nothing(
    client, data_dir, seeded, field, value, named
):
    response = await client.post("/orders", json=order_with(field, value))

    leaf = field.rsplit(".", 1)[-1]
    assert_names(problem(response, 400), named, "items" if leaf.isdigit() else leaf)
    assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("coupon", "coupon"),
        ("items.0.gift_wrap", "gift_wrap"),
        ("shipping_address.zip", "zip"),
    ],
    ids=["order", "item", "address"],
)
async def test_order_with_an_unknown_field_is_rejected_with_400_naming_it_and_writes_nothing(
    client, data_dir, seeded, where, field
):
    response = await client.post("/orders", json=order_with(where, "x"))

    assert_names(problem(response, 400), f"unknown field `{field}`")
    assert_wrote_nothing(data_dir, seeded)


# -- POST /orders: values out of range ----------------------------------------------


def too_many_items() -> dict[str, Any]:
    body = valid_order()
    body["items"] = [{"sku": "mug", "quantity": 1}] * 101
    return body


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param(order_with("items", []), ("items", "length >= 1"), id="empty-items"),
        pytest.param(order_with("items.0.quantity", 0), ("quantity", ">= 1"), id="quantity-0"),
        pytest.param(order_with("items.0.quantity", -1), ("quantity", ">= 1"), id="quantity-neg"),
        pytest.param(
            order_with("items.0.quantity", 1001), ("quantity", "<= 1000"), id="quantity-1001"
        ),
        pytest.param(
            order_with("items.0.quantity", 10**30), ("quantity", "<= 1000"), id="quantity-1e30"
        ),
        pytest.param(too_many_items(), ("items", "length <= 100"), id="101-items"),
    ],
)
async def test_order_with_no_items_bad_quantities_or_too_many_items_is_rejected_with_400(
    client, data_dir, seeded, body, named
):
    response = await client.post("/orders", json=body)

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        pytest.param("customer_id", "a" * 65, "length <= 64", id="customer-65-chars"),
        pytest.param("customer_id", "ada lovelace", "regex", id="customer-space"),
        pytest.param("items.0.sku", "mug; DROP TABLE", "regex", id="sku-punctuation"),
        pytest.param(
            "shipping_address.country", "de", "Invalid enum value", id="country-lowercase"
        ),
        pytest.param(
            "shipping_address.country", "DEU", "Invalid enum value", id="country-3-letters"
        ),
        pytest.param("shipping_address.country", "D1", "Invalid enum value", id="country-digit"),
        pytest.param("shipping_address.name", "", "length >= 1", id="name-empty"),
        pytest.param("shipping_address.line1", "x" * 201, "length <= 200", id="line1-201-chars"),
        pytest.param("shipping_address.postal_code", "1" * 201, "length <= 200", id="postcode-201"),
    ],
)
async def test_order_with_a_malformed_id_or_address_is_rejected_with_400_naming_it(
    client, data_dir, seeded, field, value, named
):
    response = await client.post("/orders", json=order_with(field, value))

    assert_names(problem(response, 400), field.rsplit(".", 1)[-1], named)
    assert_wrote_nothing(data_dir, seeded)


# -- POST /orders: well-formed but naming what does not exist ----------------------------


@pytest.mark.parametrize(
    ("items", "unknown"),
    [
        pytest.param({"nope": 1}, ["nope"], id="only-unknown"),
        pytest.param({"mug": 1, "zip": 2, "nope": 1}, ["nope", "zip"], id="among-known"),
    ],
)
async def test_order_with_unknown_sku_is_rejected_with_422_naming_the_skus_and_writes_nothing(
    client, data_dir, seeded, items, unknown
):
    response = await client.post("/orders", json=order_body("ada", items))

    assert_names(problem(response, 422), "unknown sku", *unknown)
    assert response.json()["extra"]["unknown_skus"] == unknown
    assert_wrote_nothing(data_dir, seeded)


async def test_order_for_unknown_customer_is_rejected_with_422_naming_them_and_writes_nothing(
    client, data_dir, seeded
):
    response = await client.post("/orders", json=order_body("zed", {"mug": 1}))

    assert_names(problem(response, 422), "unknown customer", "zed")
    assert_wrote_nothing(data_dir, seeded)


# -- bodies over 64 KiB ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param(
            "POST",
            "/orders",
            order_with("shipping_address.name", "x" * MAX_BODY_BYTES),
            id="order",
        ),
        pytest.param("POST", "/orders", b"x" * (MAX_BODY_BYTES + 1), id="order-garbage"),
        pytest.param(
            "PUT",
            "/products/mug",
            {"name": "m" * MAX_BODY_BYTES, "price_cents": 1, "stock": 1},
            id="product",
        ),
        pytest.param(
            "PUT",
            "/customers/ada",
            {"name": "a" * MAX_BODY_BYTES, "balance_cents": 1},
            id="customer",
        ),
    ],
)
async def test_request_body_over_64_kib_is_rejected_with_413_and_writes_nothing(
    client, data_dir, seeded, method, path, body
):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert len(content) > MAX_BODY_BYTES
    response = await client.request(method, path, **raw_json(content))

    assert_names(problem(response, 413), "Too Large")
    assert_wrote_nothing(data_dir, seeded)


async def _asgi_post(app: Any, path: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST a body in chunks without Content-Length, straight to the ASGI app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


async def test_streamed_body_over_64_kib_without_content_length_is_rejected_with_413(
    client, data_dir, seeded
):
    chunks = [b"x" * 8192] * (MAX_BODY_BYTES // 8192 + 1)

    # The app runs on the test client's event loop (its portal): call it there.
    with anyio.fail_after(10):
        status, body = await anyio.to_thread.run_sync(
            client.blocking_portal.call, _asgi_post, client.app, "/orders", chunks
        )

    assert status == 413, body
    assert "Too Large" in json.loads(body)["detail"]
    assert_wrote_nothing(data_dir, seeded)


# -- reads of what does not exist, bad query parameters ------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("/orders/{id}", {}, id="order"),
        pytest.param("/orders/{id}", {"wait": 0.05}, id="order-long-poll"),
        pytest.param("/orders/{id}/timeline", {}, id="timeline"),
    ],
)
async def test_reading_an_unknown_order_or_its_timeline_is_404_naming_it_and_writes_nothing(
    client, data_dir, seeded, path, params
):
    unknown = str(uuid.uuid4())
    response = await client.get(path.format(id=unknown), params=params)

    assert_names(problem(response, 404), unknown)
    assert_wrote_nothing(data_dir, seeded)


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        pytest.param("/sagas", {"status": "BOGUS"}, ("status", "COMPENSATED"), id="status-bogus"),
        pytest.param("/sagas", {"status": "completed"}, ("status",), id="status-lowercase"),
        pytest.param("/sagas", {"limit": 0}, ("limit", ">= 1"), id="limit-0"),
        pytest.param("/orders/x", {"wait": -1}, ("wait", ">= 0"), id="wait-negative"),
    ],
)
async def test_bad_query_parameter_is_rejected_with_400_naming_it_and_writes_nothing(
    client, data_dir, seeded, path, params, named
):
    response = await client.get(path, params=params)

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)


# -- PUT /products, PUT /customers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "identifier", "named"),
    [
        pytest.param("products", "m" * 65, ("sku", "length <= 64"), id="sku-65-chars"),
        pytest.param("products", "blue mug", ("sku", "regex"), id="sku-space"),
        pytest.param("customers", "a" * 65, ("customer_id", "length <= 64"), id="customer-65"),
        pytest.param("customers", "ada lovelace", ("customer_id", "regex"), id="customer-space"),
    ],
)
async def test_put_with_a_malformed_id_in_the_path_is_rejected_with_400_and_writes_nothing(
    client, data_dir, seeded, resource, identifier, named
):
    body = (
        {"name": "Mug", "price_cents": 100, "stock": 1}
        if resource == "products"
        else {"name": "Ada", "balance_cents": 100}
    )
    response = await client.put(f"/{resource}/{identifier}", json=body)

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)


PRODUCT = {"name": "Mug", "price_cents": 1200, "stock": 10}
ACCOUNT = {"name": "Ada", "balance_cents": 10_000}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({**PRODUCT, "price_cents": -1}, ("price_cents", ">= 0"), id="price-neg"),
        pytest.param({**PRODUCT, "stock": -1}, ("stock", ">= 0"), id="stock-neg"),
        pytest.param(
            {**PRODUCT, "price_cents": 10**12 + 1}, ("price_cents", "<="), id="price-huge"
        ),
        pytest.param(
            {**PRODUCT, "price_cents": "100"}, ("price_cents", "Expected `int`"), id="price-str"
        ),
        pytest.param({**PRODUCT, "name": ""}, ("name", "length >= 1"), id="name-empty"),
        pytest.param({"name": "Mug", "stock": 1}, ("`price_cents`",), id="price-missing"),
        pytest.param({**PRODUCT, "colour": "red"}, ("unknown field `colour`",), id="extra"),
        pytest.param(b'{"name": "Mug",', ("truncated",), id="truncated-json"),
    ],
)
async def test_put_product_with_an_invalid_body_is_rejected_with_400_and_changes_nothing(
    client, data_dir, seeded, body, named
):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.put("/products/mug", **raw_json(content))

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)
    assert (await client.get("/products/mug")).json() == {"sku": "mug", **PRODUCT}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({**ACCOUNT, "balance_cents": -1}, ("balance_cents", ">= 0"), id="neg"),
        pytest.param({**ACCOUNT, "balance_cents": 10**12 + 1}, ("balance_cents", "<="), id="big"),
        pytest.param(
            {**ACCOUNT, "balance_cents": "5"}, ("balance_cents", "Expected `int`"), id="balance-str"
        ),
        pytest.param({"name": "Ada"}, ("`balance_cents`",), id="balance-missing"),
        pytest.param({**ACCOUNT, "vip": True}, ("unknown field `vip`",), id="extra"),
    ],
)
async def test_put_customer_with_an_invalid_body_is_rejected_with_400_and_changes_nothing(
    client, data_dir, seeded, body, named
):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.put("/customers/ada", **raw_json(content))

    assert_names(problem(response, 400), *named)
    assert_wrote_nothing(data_dir, seeded)
    assert (await client.get("/customers/ada")).json() == {
        "customer_id": "ada",
        **ACCOUNT,
        "status": "open",
    }


# -- the system is unharmed ----------------------------------------------------------------


async def test_a_valid_order_still_completes_after_a_barrage_of_bad_requests(
    client, data_dir, seeded
):
    bad: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/orders", raw_json(b"{not json")),
        ("POST", "/orders", raw_json(b"")),
        ("POST", "/orders", raw_json(b"[]")),
        ("POST", "/orders", {"json": order_with("customer_id", MISSING)}),
        ("POST", "/orders", {"json": order_with("items", [])}),
        ("POST", "/orders", {"json": order_with("items.0.quantity", 0)}),
        ("POST", "/orders", {"json": order_with("items.0.quantity", 10**30)}),
        ("POST", "/orders", {"json": too_many_items()}),
        ("POST", "/orders", {"json": order_with("shipping_address.country", "de")}),
        ("POST", "/orders", {"json": order_with("coupon", "FREE")}),
        ("POST", "/orders", {"json": order_body("ada", {"nope": 1})}),
        ("POST", "/orders", {"json": order_body("zed", {"mug": 1})}),
        ("POST", "/orders", raw_json(b"x" * (MAX_BODY_BYTES + 1))),
        ("GET", f"/orders/{uuid.uuid4()}", {}),
        ("GET", f"/orders/{uuid.uuid4()}/timeline", {}),
        ("GET", "/sagas?status=BOGUS", {}),
        ("PUT", "/products/mug", {"json": {**PRODUCT, "price_cents": -1}}),
        ("PUT", "/products/blue%20mug", {"json": PRODUCT}),
        ("PUT", "/customers/ada", {"json": {**ACCOUNT, "balance_cents": -1}}),
    ]
    statuses = [
        (method, path, (await client.request(method, path, **kwargs)).status_code)
        for method, path, kwargs in bad
    ]
    assert [s for s in statuses if not 400 <= s[2] < 500] == []
    assert_wrote_nothing(data_dir, seeded)

    order = await final_order(client, await place(client, order_body("ada", {"mug": 2})))

    assert order["status"] == "COMPLETED"
    assert order["total_cents"] == 2400
    assert query(data_dir, "payment", "SELECT kind, amount_cents FROM ledger") == [("CHARGE", 2400)]
    assert (await client.get("/products/mug")).json()["stock"] == 8
    assert (await client.get("/customers/ada")).json()["balance_cents"] == 10_000 - 2400
    assert (await client.get("/health")).status_code == 200
