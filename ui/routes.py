"""The dashboard's pages: sagas, one saga, dead letters, health, and the login form.

Pages are rendered on the server (Jinja); each has a ``/ui/fragments/...``
twin that htmx fetches every few seconds to refresh the live part. The
buttons POST to the JSON API itself (``ui/static/ui.js``), so the dashboard
does nothing an operator could not do with curl or the CLI.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect
from litestar.router import Router
from litestar.static_files import create_static_files_router

from bus.sqlite import Database
from checkout.api import read_saga_detail
from checkout.definition import Definitions
from ui import queries
from ui.diagram import sequence_svg
from web.auth import COOKIE, PUBLIC

__all__ = ["COOKIE", "STATIC", "Dashboard", "static_router", "swagger_plugin", "ui_routes"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
LETTER_STATUSES = ("DEAD", "RETRYING", "DELIVERED", "DISCARDED", "ALL")
# Routes anyone may reach (the login form and the assets it need) carry
# web.auth's PUBLIC opt; the admin guard lets them through.


_TO_LOGIN = (
    "<!doctype html><meta http-equiv='refresh' content='0; url=/ui/login'>"
    "<p>Sign in first: <a href='/ui/login'>/ui/login</a></p>"
)


def _to_login(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    """A page asked for without the admin cookie: still a 401 (like every admin route),
    whose page takes a person to the login form."""
    return Response(
        _TO_LOGIN, status_code=401, media_type=MediaType.HTML,
        headers={"WWW-Authenticate": 'Bearer realm="saga checkout"'},
    )  # fmt: skip


def _fragment_to_login(
    request: Request[Any, Any, Any], exc: NotAuthorizedException
) -> Response[Any]:
    """htmx follows ``HX-Redirect`` with the whole page (a session that expired)."""
    return Response(
        "", status_code=401,
        headers={"HX-Redirect": "/ui/login", "WWW-Authenticate": 'Bearer realm="saga checkout"'},
    )  # fmt: skip


# Pages and fragments need the admin token (the app's guard checks it); without
# it a person is sent to the login form rather than shown a JSON error.
PAGE: dict[str, Any] = {
    "include_in_schema": False,
    "exception_handlers": {NotAuthorizedException: _to_login},
}
FRAGMENT: dict[str, Any] = {
    "include_in_schema": False,
    "exception_handlers": {NotAuthorizedException: _fragment_to_login},
}


@dataclass(frozen=True)
class Dashboard:
    """What the dashboard reads: checkout's database and every database of this process."""

    checkout: Database
    definitions: Definitions
    databases: Sequence[Database]
    # (consumer name, its database) for every consumer that keeps dead letters here.
    dead_letter_sources: Sequence[tuple[str, Database]]
    # The process's style: new sagas start in it (each saga shows its own).
    saga_style: str
    stuck_after: float
    module_names: Sequence[str]
    health: Mapping[str, str] = field(default_factory=dict)
    # The admin token, once admin authentication exists; None: no login needed.
    admin_token: Callable[[], str | None] = lambda: None


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
    )
    env.filters.update(age=_age, clock=_clock, money=_money)
    return env


def static_router() -> Router:
    """The vendored assets (htmx, Swagger UI) and the dashboard's CSS and JS, offline."""
    return create_static_files_router(path="/ui/static", directories=[STATIC], opt=PUBLIC)


def swagger_plugin() -> SwaggerRenderPlugin:
    """Swagger UI for ``/schema``, its assets served by the app itself (renders offline)."""
    base = "/ui/static/swagger-ui"
    return SwaggerRenderPlugin(
        js_url=f"{base}/swagger-ui-bundle.js",
        css_url=f"{base}/swagger-ui.css",
        standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
        # The default icon comes from a CDN.
        favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>",
    )


SagaStatus = Annotated[
    str | None,
    QueryParameter(pattern="^(RUNNING|COMPENSATING|PARKED|STUCK|COMPLETED|COMPENSATED)$"),
]
LetterStatus = Annotated[str, QueryParameter(pattern="^(DEAD|RETRYING|DELIVERED|DISCARDED|ALL)$")]
Render = Callable[..., Response[str]]


def ui_routes(board: Dashboard) -> list[HTTPRouteHandler]:
    """Build the dashboard's routes over this process's databases."""
    env = _environment()

    def render(name: str, status_code: int = 200, **context: Any) -> Response[str]:
        html = env.get_template(name).render(saga_style=board.saga_style, **context)
        return Response(html, media_type=MediaType.HTML, status_code=status_code)

    return [
        *_saga_routes(board, render),
        *_letter_routes(board, render),
        *_health_routes(board, render),
        *_login_routes(board, render),
    ]


def _saga_routes(board: Dashboard, render: Render) -> list[HTTPRouteHandler]:
    def sagas_context(status: str | None) -> dict[str, Any]:
        counts = queries.status_counts(board.checkout, stuck_after=board.stuck_after)
        total = sum(n for name, n in counts.items() if name != "STUCK")
        lines = queries.saga_lines(board.checkout, status, stuck_after=board.stuck_after)
        return {
            "page": "sagas", "status": status, "statuses": queries.STATUSES, "counts": counts,
            "total": total, "sagas": lines,
        }  # fmt: skip

    @get(["/ui", "/ui/sagas"], **PAGE)
    async def sagas_page(status: SagaStatus = None) -> Response[str]:
        return render("sagas.html", **sagas_context(status))

    @get("/ui/fragments/sagas", **FRAGMENT)
    async def sagas_fragment(status: SagaStatus = None) -> Response[str]:
        return render("_sagas.html", **sagas_context(status))

    def saga_context(order_id: str) -> dict[str, Any]:
        # The same reading of the saga as GET /sagas/{id}: each step done, undone or not.
        detail = board.checkout.read_now(partial(read_saga_detail, board.definitions, order_id))
        entries = queries.timeline(board.checkout, order_id)
        order = None if detail is None else queries.order_of(entries, detail.status)
        start = entries[0].at if entries else time.time()
        late = time.time() - start > board.stuck_after
        return {
            "page": "sagas", "order_id": order_id, "order": order, "detail": detail,
            "timeline": entries, "start": start, "diagram": sequence_svg(entries),
            "stuck": detail is not None and detail.status not in queries.NOT_STUCK and late,
        }  # fmt: skip

    @get("/ui/sagas/{order_id:str}", **PAGE)
    async def saga_page(order_id: FromPath[str]) -> Response[str]:
        context = saga_context(order_id)
        return render("saga.html", 200 if context["order"] else 404, **context)

    @get("/ui/fragments/sagas/{order_id:str}", **FRAGMENT)
    async def saga_fragment(order_id: FromPath[str]) -> Response[str]:
        return render("_saga.html", **saga_context(order_id))

    return [sagas_page, sagas_fragment, saga_page, saga_fragment]


def _letter_routes(board: Dashboard, render: Render) -> list[HTTPRouteHandler]:
    def letters_context(status: str, consumer: str) -> dict[str, Any]:
        sources = [s for s in board.dead_letter_sources if not consumer or s[0] == consumer]
        return {
            "page": "dead-letters", "status": status, "consumer": consumer,
            "letter_statuses": LETTER_STATUSES,
            "consumers": [name for name, _ in board.dead_letter_sources],
            "letters": queries.dead_letters(sources, status),
        }  # fmt: skip

    @get("/ui/dead-letters", **PAGE)
    async def letters_page(
        status: LetterStatus = "DEAD", consumer: FromQuery[str] = ""
    ) -> Response[str]:
        return render("dead_letters.html", **letters_context(status, consumer))

    @get("/ui/fragments/dead-letters", **FRAGMENT)
    async def letters_fragment(
        status: LetterStatus = "DEAD", consumer: FromQuery[str] = ""
    ) -> Response[str]:
        return render("_dead_letters.html", **letters_context(status, consumer))

    return [letters_page, letters_fragment]


def _health_routes(board: Dashboard, render: Render) -> list[HTTPRouteHandler]:
    def health_context() -> dict[str, Any]:
        numbers = queries.headline(board.checkout, board.databases, board.dead_letter_sources)
        return {
            "page": "health", "numbers": numbers, "parts": dict(board.health),
            "module_names": board.module_names,
        }  # fmt: skip

    @get("/ui/health", **PAGE)
    async def health_page() -> Response[str]:
        return render("health.html", **health_context())

    @get("/ui/fragments/health", **FRAGMENT)
    async def health_fragment() -> Response[str]:
        return render("_health.html", **health_context())

    return [health_page, health_fragment]


def _login_routes(board: Dashboard, render: Render) -> list[HTTPRouteHandler]:
    @get("/ui/login", include_in_schema=False, opt=PUBLIC)
    async def login_form() -> Response[str]:
        return render("login.html", page="login", enabled=board.admin_token() is not None)

    @post("/ui/login", include_in_schema=False, opt=PUBLIC, status_code=303)
    async def login(request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the token in constant time; set it as an HttpOnly, SameSite=Strict cookie."""
        expected = board.admin_token()
        if expected is None:
            return Redirect("/ui", status_code=303)
        form = await request.form()
        given = form.get("token")
        given = given if isinstance(given, str) else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return render("login.html", 401, page="login", enabled=True, error="wrong token")
        cookie = Cookie(key=COOKIE, value=expected, httponly=True, samesite="strict", path="/")
        return Redirect("/ui", status_code=303, cookies=[cookie])

    return [login_form, login]
