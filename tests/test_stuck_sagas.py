"""A saga that does not finish within the deadline is reported as stuck, in the API and the logs."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from bus.memory import InMemoryTransport
from bus.ports import BatchHandler
from main import Settings, create_app
from tests.support import admin_client, order_body, place, seed, wait_for

pytestmark = pytest.mark.anyio


class BlackHoleForShipping(InMemoryTransport):
    """Loses every message bound for the shipping module (a partitioned participant)."""

    def subscribe(self, subscription: str, types, handler: BatchHandler) -> None:
        if subscription == "shipping":

            async def drop(batch):
                await anyio.sleep_forever()

            handler = drop
        super().subscribe(subscription, types, handler)


async def test_a_saga_past_its_deadline_is_listed_and_logged_as_stuck(
    data_dir: Path, saga_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=data_dir, saga=saga_mode, stuck_after=0.3)
    app = create_app(settings, transport=BlackHoleForShipping())
    caplog.set_level(logging.WARNING, logger="checkout.stuck")
    async with admin_client(app) as client:
        await seed(client, {"mug": (100, 5)}, {"ada": 1_000})
        order_id = await place(client, order_body("ada", {"mug": 1}))

        async def listed() -> bool:
            response = await client.get("/sagas", params={"status": "STUCK"})
            return [s["order_id"] for s in response.json()] == [order_id]

        await wait_for(listed, what="the saga listed as stuck")
        saga = (await client.get("/sagas")).json()[0]
        assert saga["stuck"] is True
        assert saga["step"] == "shipping"
        assert saga["age_seconds"] >= 0.3
        await wait_for(lambda: order_id in caplog.text, what="a stuck-saga warning in the log")
        assert "stuck" in caplog.text
