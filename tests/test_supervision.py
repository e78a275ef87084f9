"""A background part that fails is restarted, and /health says so meanwhile."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bus.memory import InMemoryTransport
from main import Settings, create_app
from tests.support import admin_client, wait_for

pytestmark = pytest.mark.anyio


class FlakyTransport(InMemoryTransport):
    """Fails its first start, as a transport whose broker is not up yet would."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0
        self.release = anyio.Event()

    async def run(self) -> None:
        self.starts += 1
        if self.starts == 1:
            await self.release.wait()
            raise ConnectionError("broker not reachable")
        await super().run()


async def test_a_failed_transport_is_restarted_and_health_reports_it(data_dir: Path) -> None:
    transport = FlakyTransport()
    app = create_app(Settings(data_dir=data_dir), transport=transport)
    async with admin_client(app) as client:
        assert (await client.get("/health")).status_code == 200
        transport.release.set()

        async def unhealthy() -> bool:
            return (await client.get("/health")).status_code == 503

        await wait_for(unhealthy, what="/health reporting the failure")
        body = (await client.get("/health")).json()
        assert "broker not reachable" in body["parts"]["transport"]

        async def healthy() -> bool:
            return (await client.get("/health")).status_code == 200

        await wait_for(healthy, what="the transport restarted")
        assert transport.starts == 2
