"""The dashboard's pages and the API docs, in process (the browser test drives them for real)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.testing import AsyncTestClient

from main import Settings, create_app
from tests.support import final_order, order_body, place, quiescent, seed, wait_for
from ui import COOKIE, Dashboard, static_router, ui_routes
from ui.diagram import sequence_svg
from ui.queries import Entry

pytestmark = pytest.mark.anyio

PAGES = ("/ui", "/ui/sagas?status=COMPLETED", "/ui/dead-letters", "/ui/health", "/ui/login")
ASSET = re.compile(r"""(?:src|href)=["']([^"'#]+)["']""")


async def _two_orders(client: httpx.AsyncClient, data_dir: Path) -> tuple[str, str]:
    await seed(client, {"mug": (1200, 10)}, {"ada": 100_000})
    done = await place(client, order_body("ada", {"mug": 1}))
    undone = await place(client, order_body("ada", {"mug": 1}, country="AQ"))
    for order_id in (done, undone):
        await final_order(client, order_id)
    await wait_for(lambda: quiescent(data_dir), what="outboxes drained")
    return done, undone


async def test_every_page_shows_the_sagas_of_this_process_in_either_style(
    client: httpx.AsyncClient, data_dir: Path, saga_mode: str
) -> None:
    done, undone = await _two_orders(client, data_dir)
    listing = (await client.get("/ui")).text
    assert f'data-order-id="{done}" data-status="COMPLETED"' in listing
    assert f'data-order-id="{undone}" data-status="COMPENSATED"' in listing
    assert f"saga style: <b>{saga_mode}</b>" in listing
    filtered = (await client.get("/ui/fragments/sagas", params={"status": "COMPENSATED"})).text
    assert undone in filtered
    assert done not in filtered

    detail = await client.get(f"/ui/sagas/{undone}")
    assert detail.status_code == 200
    assert 'id="saga-status">COMPENSATED' in detail.text
    assert "country_not_served" in detail.text
    assert detail.text.count('class="compensation"') >= 3
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="path-diagram"' in detail.text
    assert "Abort" not in detail.text  # nothing left to abort

    health = (await client.get("/ui/fragments/health")).text
    assert '<span class="number" id="in-flight">0</span>' in health
    assert '<span class="number" id="outbox-backlog">0</span>' in health
    assert (await client.get("/ui/sagas/no-such-order")).status_code == 404
    assert (await client.get("/ui", params={"status": "LOST"})).status_code == 400


async def test_pages_and_api_docs_load_every_asset_from_the_app_itself(
    client: httpx.AsyncClient,
) -> None:
    for page in (*PAGES, "/schema", "/schema/swagger"):
        response = await client.get(page)
        assert response.status_code == 200, page
        for url in ASSET.findall(response.text):
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            assert (await client.get(url)).status_code == 200, f"{page}: {url}"
    docs = (await client.get("/schema")).text
    assert "/ui/static/swagger-ui/swagger-ui-bundle.js" in docs


async def test_login_sets_the_token_as_an_httponly_strict_cookie_only_when_it_is_right(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_ADMIN_TOKEN", "s3cret")
    async with AsyncTestClient(app=create_app(Settings(data_dir=data_dir))) as client:
        wrong = await client.post("/ui/login", data={"token": "guess"})
        assert wrong.status_code == 401
        assert "set-cookie" not in wrong.headers
        right = await client.post("/ui/login", data={"token": "s3cret"}, follow_redirects=False)
        assert right.status_code == 303
        assert right.headers["location"] == "/ui"
        cookie = right.headers["set-cookie"]
        assert cookie.startswith("saga_admin=s3cret;")
        for flag in ("httponly", "path=/", "samesite=strict"):
            assert flag in cookie.lower()


async def test_a_process_without_checkout_serves_the_api_docs_but_no_dashboard(
    data_dir: Path,
) -> None:
    settings = Settings(data_dir=data_dir, modules="order,payment")
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/ui")).status_code == 404
        assert (await client.get("/schema")).status_code == 200
        static = await client.get("/ui/static/swagger-ui/swagger-ui.css")
        assert static.status_code == 200


def _entry(n: int, type_: str, source: str, *, cause: int | None = None, **kw: object) -> Entry:
    return Entry(
        message_id=str(n), causation_id=None if cause is None else str(cause), type=type_,
        kind=str(kw.get("kind", "event")), source=source, target=kw.get("target"),  # type: ignore[arg-type]
        compensation=bool(kw.get("compensation", False)), at=float(n), data={},
    )  # fmt: skip


def test_the_path_diagram_draws_an_event_to_the_modules_that_acted_on_it() -> None:
    svg = sequence_svg(
        [
            _entry(1, "order.OrderCreated", "order"),
            _entry(
                2, "payment.ProcessPayment", "checkout", cause=1, kind="command", target="payment"
            ),
            _entry(3, "payment.PaymentFailed", "payment", cause=2),
            _entry(
                4,
                "order.CancelOrder",
                "checkout",
                cause=3,
                kind="command",
                target="order",
                compensation=True,
            ),
        ]
    )
    lanes = re.findall(r'font-size="13" font-family="sans-serif">(\w+)</text>', svg)
    assert lanes == ["order", "checkout", "payment"]
    arrows = re.findall(
        r'<line x1="(\d+)" y1="\d+" x2="(\d+)"[^>]*stroke="(#\w+)"[^>]*marker-end', svg
    )
    order, checkout, payment = 95, 245, 395
    assert [(int(a), int(b) + (4 if int(b) > int(a) else -4), c) for a, b, c in arrows] == [
        (order, checkout, "#333333"),  # OrderCreated, to checkout that acted on it
        (checkout, payment, "#333333"),
        (payment, checkout, "#333333"),
        (checkout, order, "#c0392b"),  # the compensation, in red
    ]


def _guarded_dashboard() -> Litestar:
    """The dashboard behind a guard like the admin one: only public handlers or the cookie."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not handler.opt.get("public") and connection.cookies.get(COOKIE) != "t":
            raise NotAuthorizedException("the admin token is missing")

    board = Dashboard(
        checkout=cast("Any", None), definitions=cast("Any", None), databases=[],
        dead_letter_sources=[], saga_style="orchestration", stuck_after=60, module_names=[],
        admin_token=lambda: "t",
    )  # fmt: skip
    return Litestar(route_handlers=[*ui_routes(board), static_router()], guards=[guard])


async def test_without_the_admin_cookie_pages_lead_to_the_login_form_which_is_public() -> None:
    async with AsyncTestClient(app=_guarded_dashboard()) as client:
        page = await client.get("/ui/health", follow_redirects=False)
        # A 401 like every admin route, whose page takes a person to the login form.
        assert page.status_code == 401
        assert "url=/ui/login" in page.text
        fragment = await client.get("/ui/fragments/health")
        assert (fragment.status_code, fragment.headers["hx-redirect"]) == (401, "/ui/login")
        assert (await client.get("/ui/login")).status_code == 200
        assert (await client.get("/ui/static/htmx/htmx.min.js")).status_code == 200
        login = await client.post("/ui/login", data={"token": "t"}, follow_redirects=False)
        assert login.status_code == 303
