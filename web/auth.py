"""Who may call what: every route needs the admin token unless its handler is marked public.

Secure by default. One guard, installed on the whole application by
``main.create_app``, refuses every request to a handler that is not marked
public (``opt={"public": True}``, or the ``public`` helper below) unless it
carries the admin token, in either form:

- ``Authorization: Bearer <token>`` (scripts, curl, other services);
- a cookie named ``saga_admin`` holding the token (the dashboard's login form
  sets it, HttpOnly and SameSite=Strict, so a browser sends it by itself).

If an ``Authorization`` header is present it alone counts. Tokens are compared in
constant time (``hmac.compare_digest``). A missing or wrong token gets 401 with
``WWW-Authenticate: Bearer`` and the usual JSON error body
``{"status_code": 401, "detail": ...}``; the guard runs before the handler and
before the body is read, so nothing is written. The token is never logged.

Where the token comes from (``load_token``, the same lookup for the app, a CLI,
the tests and the bench scripts):

1. the ``SAGA_ADMIN_TOKEN`` environment variable;
2. else the file given as ``--admin-token-file PATH``;
3. else ``<data dir>/admin-token``, which ``ensure_token`` generates on the
   first start (32 random bytes, URL-safe base64), created with mode 0600.

Over Kafka every process must check the same token: give them the same
``SAGA_ADMIN_TOKEN`` or token file (processes sharing a data directory share
the generated file).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard

from web.http import problems

__all__ = [
    "COOKIE",
    "PUBLIC",
    "SECURITY_SCHEMES",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "AdminToken",
    "TokenError",
    "admin_guard",
    "document_access",
    "ensure_token",
    "is_public",
    "load_token",
    "public",
]

log = logging.getLogger(__name__)

TOKEN_ENV = "SAGA_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
COOKIE = "saga_admin"
PUBLIC: dict[str, Any] = {"public": True}

H = TypeVar("H", bound=BaseRouteHandler)

# For the OpenAPI schema: the admin routes' requirement, and its 401.
SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "adminToken": SecurityScheme(
        type="http",
        scheme="bearer",
        description=f"The admin token ({TOKEN_ENV}, --admin-token-file, or <data dir>/"
        f"{TOKEN_FILE}); the {COOKIE} cookie holding it works too",
    )
}


class TokenError(Exception):
    """Raised when the configured admin token cannot be read (missing or empty file)."""


@dataclass(frozen=True)
class AdminToken:
    """The token, and where it came from (for the start-up log line; never the value)."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"AdminToken(source={self.source!r})"


def public(handler: H) -> H:
    """Mark a route handler public: callable without the admin token."""
    handler.opt["public"] = True
    return handler


def is_public(handler: BaseRouteHandler) -> bool:
    return bool(handler.opt.get("public"))


def _read(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise TokenError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    if not value:
        raise TokenError(f"the admin token file {path} is empty")
    return value


def load_token(
    data_dir: Path,
    token_file: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> AdminToken | None:
    """The admin token as the app finds it; None if none is configured or generated yet."""
    from_env = environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return AdminToken(from_env, f"the {TOKEN_ENV} environment variable")
    if token_file is not None:
        return AdminToken(_read(token_file), str(token_file))
    generated = data_dir / TOKEN_FILE
    if generated.exists():
        return AdminToken(_read(generated), str(generated))
    return None


def ensure_token(
    data_dir: Path,
    token_file: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> AdminToken:
    """``load_token``, generating ``<data_dir>/admin-token`` (mode 0600) if there is none.

    Safe when several processes start on one data directory at once: the file
    appears complete or not at all (written aside, then hard-linked into place),
    and whoever loses the race reads the winner's token.
    """
    found = load_token(data_dir, token_file, environ=environ)
    if found is not None:
        return found
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = data_dir / TOKEN_FILE
    aside = data_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(aside, target)
        except FileExistsError:
            return AdminToken(_read(target), str(target))
    finally:
        aside.unlink(missing_ok=True)
    log.warning("generated an admin token in %s (mode 0600): admin routes need it", target)
    return AdminToken(_read(target), str(target))


def document_access(handlers: Iterable[HTTPRouteHandler]) -> None:
    """Write into each admin handler's OpenAPI entry that it needs the token (and may 401)."""
    for handler in handlers:
        if not is_public(handler):
            handler.security = [{"adminToken": []}]
            handler.responses = {**problems(401), **(handler.responses or {})}


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""
    return connection.cookies.get(COOKIE)


def admin_guard(token: AdminToken) -> Guard:
    """The application-wide guard: public handlers pass, the rest need ``token``."""
    expected = token.value.encode()

    # A coroutine: litestar would run a plain function in a worker thread, per request.
    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        if is_public(handler):
            return
        presented = _presented(connection)
        if presented is None:
            raise NotAuthorizedException(
                "admin token required: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="saga-checkout"'},
            )
        if not hmac.compare_digest(presented.encode(), expected):
            raise NotAuthorizedException(
                "invalid admin token",
                headers={"WWW-Authenticate": 'Bearer realm="saga-checkout", error="invalid_token"'},
            )

    return guard
