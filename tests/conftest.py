from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from main import Settings, create_app
from tests.kafka_broker import stop_if_started_here
from tests.support import ADMIN_TOKEN, Anonymous, admin_client
from web.auth import TOKEN_ENV

# Every app the tests start (in process or as a subprocess) checks this token.
os.environ[TOKEN_ENV] = ADMIN_TOKEN

AppClient = Callable[..., Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=["orchestration", "choreography"])
def saga_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
async def client(data_dir: Path, saga_mode: str) -> AsyncIterator[httpx.AsyncClient]:
    """The whole system in process, behind real HTTP semantics (ASGI); sends the admin token."""
    app = create_app(Settings(data_dir=data_dir, saga=saga_mode))
    async with admin_client(app) as test_client:
        yield test_client


@pytest.fixture
def anonymous(client: httpx.AsyncClient) -> Anonymous:
    """The same app as ``client``, called without the admin token (or with another one)."""
    return Anonymous(client)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_if_started_here()
