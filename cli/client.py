"""The HTTP client the CLI talks through: one clear line for every way a call can fail."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Api", "ApiError", "MissingRouteError", "admin_token"]


class ApiError(Exception):
    """Raised when the server cannot be reached or answers with an error; ``str`` is one line."""


class MissingRouteError(ApiError):
    """Raised when the server has no such route (a feature this server does not have yet)."""


def admin_token(token: str | None, token_file: Path | None, data_dir: Path) -> str | None:
    """The admin token from the same places as the app: the option, the environment, a file."""
    if token:
        return token
    if os.environ.get("SAGA_ADMIN_TOKEN"):
        return os.environ["SAGA_ADMIN_TOKEN"]
    path = token_file or data_dir / "admin-token"
    if path.is_file():
        return path.read_text().strip() or None
    return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        detail = str(body.get("detail", body))
        extra = body.get("extra")
        return f"{detail} {extra}" if extra else detail
    return str(body)


@dataclass
class Api:
    """Calls on the saga checkout's HTTP API at ``url``."""

    url: str
    token: str | None = None
    timeout: float = 30.0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=self.timeout)

    def async_client(self, **limits: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self.headers(),
            timeout=self.timeout,
            limits=httpx.Limits(**limits) if limits else httpx.Limits(),
        )

    def unreachable(self) -> ApiError:
        return ApiError(f"cannot reach {self.url}: is it running?")

    def check(self, method: str, path: str, response: httpx.Response) -> Any:
        """The decoded body of a successful answer, or the error as one line."""
        if response.status_code < 400:
            return response.json() if response.content else None
        detail = _detail(response)
        if response.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            raise MissingRouteError(f"this server has no {method} {path} (yet)")
        if response.status_code == 401:
            detail += " (give the admin token: --token, SAGA_ADMIN_TOKEN or --token-file)"
        raise ApiError(f"{method} {path}: {response.status_code} {detail}")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            with self.client() as client:
                response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable() from exc
        return self.check(method, path, response)

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.call("GET", path, params=clean)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, json=body)
