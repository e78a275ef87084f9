"""Who may do what: customer routes are open, everything else needs the admin token.

The walk over the app's own route table is the point: a route added later is
admin-only unless its handler is marked public, and this test fails if the
public set changes without it.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from main import Settings, create_app
from tests.process import ROOT, AppProcess
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    DB_NAMES,
    Anonymous,
    admin_client,
    final_order,
    order_body,
    place,
    query,
    seed,
)
from web.auth import COOKIE, TOKEN_ENV, TOKEN_FILE, ensure_token, is_public, load_token

pytestmark = pytest.mark.anyio

# (method, path) of every handler callable without the token. The OPTIONS
# handlers Litestar adds to every path follow their path's owner: only the
# schema router's are public.
PUBLIC_ROUTES = {
    ("GET", "/health"),
    ("POST", "/orders"),
    ("GET", "/orders/{order_id:str}"),
    ("POST", "/orders/{order_id:str}/cancel"),
    ("GET", "/products/{sku:str}"),
    # The dashboard's login form and the assets its pages (and /schema's) load.
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/ui/static/{file_path:path}"),
    ("HEAD", "/ui/static/{file_path:path}"),
}
SCHEMA = "/schema"
# A value for each path parameter that passes its constraints.
SAMPLES = {"order_id": "0f0e0d0c", "sku": "mug", "customer_id": "ada", "letter_id": "order:1"}
WRONG_TOKENS = [
    pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-bearer"),
    pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, id="token-plus-a-char"),
    pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}, id="token-minus-a-char"),
    pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, id="other-scheme"),
    pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    pytest.param({"Cookie": f"{COOKIE}=wrong-token"}, id="wrong-cookie"),
]


def handlers(app: Litestar) -> list[tuple[str, str, bool]]:
    """Every (method, path, public) in the app's route table, OPTIONS excepted."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method != "OPTIONS":
                found.append((method, route.path, is_public(handler)))
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: SAMPLES.get(m.group(1), "x"), path)


def admin_routes(app: Litestar) -> list[tuple[str, str]]:
    return [(method, concrete(path)) for method, path, public in handlers(app) if not public]


def outboxes(data_dir: Path) -> dict[str, int]:
    """How many messages each module has ever emitted (any write emits one)."""
    return {db: query(data_dir, db, "SELECT count(*) FROM outbox")[0][0] for db in DB_NAMES}


@pytest.fixture
def app(data_dir: Path) -> Litestar:
    return create_app(Settings(data_dir=data_dir))


def test_the_public_routes_are_exactly_the_customer_routes_health_and_the_schema(app):
    public = {(m, p) for m, p, is_pub in handlers(app) if is_pub and not p.startswith(SCHEMA)}
    schema = {(m, p) for m, p, is_pub in handlers(app) if p.startswith(SCHEMA)}

    assert public == PUBLIC_ROUTES
    assert schema, "the OpenAPI schema is served"
    assert all(is_pub for m, p, is_pub in handlers(app) if p.startswith(SCHEMA))


def test_every_other_route_is_an_admin_route(app):
    admin = {(m, p) for m, p, is_pub in handlers(app) if not is_pub}

    assert admin >= {
        ("PUT", "/products/{sku:str}"),
        ("PUT", "/customers/{customer_id:str}"),
        ("GET", "/customers/{customer_id:str}"),
        ("PATCH", "/customers/{customer_id:str}"),
        ("GET", "/orders/{order_id:str}/timeline"),
        ("GET", "/sagas"),
        ("GET", "/sagas/{order_id:str}"),
        ("POST", "/sagas/{order_id:str}/resolve"),
        ("POST", "/sagas/{order_id:str}/retry"),
        ("POST", "/sagas/{order_id:str}/abort"),
        ("GET", "/dead-letters"),
        ("POST", "/dead-letters/{letter_id:str}/replay"),
        ("POST", "/dead-letters/{letter_id:str}/discard"),
    }


async def test_each_admin_route_refuses_a_missing_token_with_401_and_a_bearer_challenge(
    client, anonymous: Anonymous, data_dir
):
    before = outboxes(data_dir)
    for method, path in admin_routes(client.app):
        response = await anonymous.request(method, path, json={})

        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
        if path.startswith("/ui"):  # the dashboard's pages: a page that leads to the login
            assert "/ui/login" in response.text or response.headers.get("hx-redirect")
            continue
        assert response.json() == {"status_code": 401, "detail": response.json()["detail"]}
        assert "token" in response.json()["detail"]
    assert outboxes(data_dir) == before


@pytest.mark.parametrize("credentials", WRONG_TOKENS)
async def test_each_admin_route_refuses_a_wrong_token_with_401(
    client, anonymous: Anonymous, credentials
):
    for method, path in admin_routes(client.app):
        response = await anonymous.request(method, path, headers=credentials, json={})

        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
        assert ADMIN_TOKEN not in response.text


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(ADMIN, id="bearer"),
        pytest.param({"Authorization": f"bearer {ADMIN_TOKEN}"}, id="bearer-lowercase"),
        pytest.param({"Cookie": f"{COOKIE}={ADMIN_TOKEN}"}, id="cookie"),
    ],
)
async def test_each_admin_route_accepts_the_right_token_as_bearer_or_cookie(
    client, anonymous: Anonymous, credentials
):
    for method, path in admin_routes(client.app):
        response = await anonymous.request(method, path, headers=credentials)

        assert response.status_code != 401, (method, path, response.text)
        assert response.status_code < 500, (method, path, response.text)


async def test_a_refused_write_changes_nothing(client, anonymous: Anonymous, data_dir):
    await seed(client, {"mug": (1200, 5)}, {"ada": 1_000})

    product = {"name": "Cheap", "price_cents": 1, "stock": 1_000}
    refused = [
        await anonymous.request("PUT", "/products/mug", json=product),
        await anonymous.request(
            "PUT", "/customers/ada", json={"name": "A", "balance_cents": 10**9}
        ),
        await anonymous.request("PUT", "/products/new", json=product),
    ]

    assert [r.status_code for r in refused] == [401, 401, 401]
    assert query(data_dir, "inventory", "SELECT sku, price_cents, stock FROM products") == [
        ("mug", 1200, 5)
    ]
    assert query(data_dir, "payment", "SELECT customer_id, balance_cents FROM accounts") == [
        ("ada", 1_000)
    ]


async def test_customer_routes_work_without_a_token(client, anonymous: Anonymous):
    await seed(client, {"mug": (1200, 5)}, {"ada": 10_000})

    placed = await anonymous.request("POST", "/orders", json=order_body("ada", {"mug": 1}))
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    read = await anonymous.request("GET", f"/orders/{order_id}", params={"wait": 10})
    product = await anonymous.request("GET", "/products/mug")
    health = await anonymous.request("GET", "/health")
    schema = await anonymous.request("GET", "/schema/openapi.json")

    assert read.status_code == 200
    assert read.json()["status"] in ("PENDING", "COMPLETED")
    assert product.status_code == 200
    assert health.status_code == 200
    assert schema.status_code == 200
    assert (await final_order(client, order_id))["status"] == "COMPLETED"


# -- where the token comes from ------------------------------------------------------


def test_without_env_or_file_a_token_is_generated_once_into_the_data_dir_owner_only(
    tmp_path: Path,
):
    data_dir = tmp_path / "data"
    first = ensure_token(data_dir, environ={})
    again = ensure_token(data_dir, environ={})

    path = data_dir / TOKEN_FILE
    assert first.value == again.value == path.read_text().strip()
    assert len(first.value) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.value not in repr(first)
    assert load_token(data_dir, environ={}) == first
    assert [p.name for p in data_dir.iterdir()] == [TOKEN_FILE]


def test_the_environment_variable_wins_over_the_file_and_the_file_over_the_data_dir(
    tmp_path: Path,
):
    data_dir = tmp_path / "data"
    ensure_token(data_dir, environ={})
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")

    generated = (data_dir / TOKEN_FILE).read_text().strip()

    assert ensure_token(data_dir, token_file, environ={TOKEN_ENV: "from-env"}).value == "from-env"
    assert ensure_token(data_dir, token_file, environ={}).value == "from-the-file"
    assert ensure_token(data_dir, None, environ={}).value == generated


async def test_an_app_with_a_token_file_checks_that_token(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV)
    token_file = tmp_path / "token"
    token_file.write_text("file-token-abcdef\n")
    app = create_app(Settings(data_dir=tmp_path / "data", admin_token_file=token_file))

    async with admin_client(app) as client:
        refused = await client.get("/sagas")
        accepted = await client.get("/sagas", headers={"Authorization": "Bearer file-token-abcdef"})

    assert refused.status_code == 401
    assert accepted.status_code == 200


@pytest.mark.slow
async def test_a_started_app_prints_where_the_generated_token_is_but_never_the_token(
    tmp_path: Path,
):
    data_dir = tmp_path / "data"
    app = AppProcess(data_dir, tmp_path / "app.log")
    original = os.environ.pop(TOKEN_ENV)
    try:
        app.start()
    finally:
        os.environ[TOKEN_ENV] = original
    try:
        await app.wait_healthy()
        token = (data_dir / TOKEN_FILE).read_text().strip()
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            refused = await client.get("/sagas", headers=ADMIN)
            accepted = await client.get("/sagas", headers={"Authorization": f"Bearer {token}"})
            await client.get("/sagas", headers={"Authorization": "Bearer some-wrong-guess"})
    finally:
        app.stop()

    assert refused.status_code == 401
    assert accepted.status_code == 200
    log = app.tail(200)
    assert str(data_dir / TOKEN_FILE) in log
    assert token not in log
    assert "some-wrong-guess" not in log


def test_an_unreadable_token_file_stops_the_app_with_one_clear_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    missing = tmp_path / "nope"
    result = subprocess.run(
        [sys.executable, "main.py", "--data-dir", str(tmp_path / "data"),
         "--admin-token-file", str(missing)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"main.py: cannot read the admin token file {missing}: No such file or directory"
    ]


async def test_order_ids_are_unguessable_capabilities(client):
    await seed(client, {"mug": (100, 5)}, {"ada": 1_000})
    ids = [await place(client, order_body("ada", {"mug": 1})) for _ in range(2)]

    # 122 random bits each (uuid4): reading or cancelling an order needs its id.
    assert [uuid.UUID(order_id).version for order_id in ids] == [4, 4]
    assert ids[0] != ids[1]
