from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from main import Settings, create_app
from tests.kafka_broker import stop_if_started_here

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
    """The whole system in process, behind real HTTP semantics (ASGI)."""
    app = create_app(Settings(data_dir=data_dir, saga=saga_mode))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_if_started_here()
