"""Many orders, each cancelled at a random moment while its saga runs (around the pivot
too), with the process SIGKILLed and restarted meanwhile, in both styles: every order ends
COMPLETED (its cancel answered 409) or CANCELLED (everything undone), money and stock are
conserved, and no cancel answered 202 belongs to an order that completed."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import httpx
import pytest

from bench.invariants import audit
from tests.process import AppProcess
from tests.support import ADMIN, order_body, query, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.crash]

ORDERS = 30
STOCK = 24  # scarce: some orders fail for stock, not only for their cancel
BALANCE = 100 * 26  # and some for money
SEED = 20261201


class Cluster:
    """The app across kills: requests follow it to its new port, and retry while it is down."""

    def __init__(self, app: AppProcess) -> None:
        self.app = app

    async def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        with anyio.fail_after(60):
            while True:
                try:
                    async with httpx.AsyncClient(
                        base_url=self.app.url, headers=ADMIN, timeout=5
                    ) as client:
                        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
                except httpx.TransportError:
                    await anyio.sleep(0.05)  # down, or killed mid-request: ask again
                    continue
                if response.status_code < 500:
                    return response
                await anyio.sleep(0.05)


async def test_cancels_racing_the_saga_across_kills_end_consistent(
    data_dir: Path, tmp_path: Path, saga_mode: str
) -> None:
    rng = random.Random(f"{SEED}-{saga_mode}")
    # Half the sagas wait a while right before the pivot (their shipment's news is held
    # back), so that cancels meet them there; the step timeout is longer than the wait.
    hold = "shipping.ShipmentScheduled:delay=0.5;delay=0.2;delay_s=1.5"
    app = AppProcess(data_dir, tmp_path / "app.log", "--saga", saga_mode,
                     "--timeouts", "step=5,attempts=5,saga=300", "--log-level", "WARNING",
                     "--chaos", hold, "--chaos-seed", "7")  # fmt: skip
    cluster = Cluster(app)
    answers: dict[str, int] = {}
    try:
        app.start()
        await app.wait_healthy()
        await cluster.call("PUT", "/products/mug", json={"name": "Mug", "price_cents": 100,
                                                         "stock": STOCK})  # fmt: skip
        await cluster.call("PUT", "/customers/ada", json={"name": "Ada", "balance_cents": BALANCE})

        async def one(n: int, pause: float) -> None:
            placed = await cluster.call(
                "POST", "/orders", json=order_body("ada", {"mug": 1}),
                headers={"Idempotency-Key": f"race-{n}"},
            )  # fmt: skip
            assert placed.status_code == 202, placed.text
            order_id = placed.json()["order_id"]
            await anyio.sleep(pause)  # a random moment in the saga's life, not a wait for it
            cancelled = await cluster.call("POST", f"/orders/{order_id}/cancel")
            answers[order_id] = cancelled.status_code

        async def killer() -> None:
            for pause in (1.0, 2.0):  # while later orders are still being cancelled
                await anyio.sleep(pause)
                app.kill()
                app.start()
                await app.wait_healthy()

        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            for n in range(ORDERS):
                # At once (before the pivot), around it, or later (past it).
                tg.start_soon(one, n, rng.choice((0.0, rng.uniform(0, 1.5), rng.uniform(0, 4))))

        def finished() -> bool:
            rows = query(data_dir, "order", "SELECT count(*) FROM orders WHERE status = 'PENDING'")
            return rows == [(0,)]

        await wait_for(finished, deadline=90, what="every order finished")
        await wait_for(
            lambda: all(
                query(data_dir, db, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")
                == [(0,)]
                for db in ("order", "payment", "inventory", "shipping", "checkout")
            ),
            deadline=60,
            what="outboxes drained",
        )
    finally:
        app.kill()

    orders = dict(query(data_dir, "order", "SELECT order_id, status FROM orders"))
    reasons = dict(query(data_dir, "order", "SELECT order_id, reason FROM orders"))
    assert len(orders) == ORDERS == len(answers), app.tail()
    for order_id, answer in answers.items():
        status = orders[order_id]
        assert status in ("COMPLETED", "CANCELLED")
        if answer == 202:
            assert status == "CANCELLED", f"{order_id}: cancel accepted but the order completed"
            assert reasons[order_id] == "cancelled by customer"
        elif answer == 409:
            assert status == "COMPLETED"
        else:
            assert (answer, status) == (200, "CANCELLED")
    assert audit(data_dir, initial_stock={"mug": STOCK}, initial_balance={"ada": BALANCE}) == []
    # The race was real: both outcomes happened.
    assert {202, 409} <= set(answers.values()), answers
