"""A new definition deployed while sagas of the old one are in flight: those finish on the
version they started with, new ones start on the new one, across a real restart; and a
build without the old definition refuses to start while it is still needed."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx
import pytest

from tests.process import ROOT, AppProcess, free_port
from tests.support import ADMIN, order_body, query, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.crash]

HOLD = "inventory.StockReserved:delay=1;delay_s=60"  # v1 sagas wait here until the restart


def terminal(data_dir: Path, order_ids: list[str]) -> bool:
    marks = ",".join("?" * len(order_ids))
    rows = query(data_dir, "order", f"SELECT status FROM orders WHERE order_id IN ({marks})",
                 tuple(order_ids))  # fmt: skip
    return len(rows) == len(order_ids) and all(status != "PENDING" for (status,) in rows)


async def place_orders(url: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        ids = []
        for _ in range(count):
            response = await client.post("/orders", json=order_body("ada", {"mug": 1}))
            assert response.status_code == 202, response.text
            ids.append(response.json()["order_id"])
        return ids


async def test_sagas_in_flight_finish_on_their_version_and_new_ones_start_on_the_new(
    data_dir: Path, tmp_path: Path, saga_mode: str
) -> None:
    app = AppProcess(data_dir, tmp_path / "app.log", "--saga", saga_mode,
                     "--timeouts", "step=60", "--log-level", "WARNING")  # fmt: skip
    try:
        app.start("--chaos", HOLD)
        await app.wait_healthy()
        async with httpx.AsyncClient(base_url=app.url, headers=ADMIN, timeout=10) as client:
            await client.put("/products/mug", json={"name": "Mug", "price_cents": 100, "stock": 50})
            await client.put("/customers/ada", json={"name": "Ada", "balance_cents": 100_000})
        old = await place_orders(app.url, 3)
        # Each reserved (the reply is held back on its way): in flight under v1.
        await wait_for(
            lambda: query(data_dir, "inventory", "SELECT count(*) FROM reservations") == [(3,)]
        )
        app.kill()

        refused = await anyio.run_process(
            [sys.executable, "main.py", "--data-dir", str(data_dir), "--port", str(free_port()),
             "--saga", saga_mode, "--flow", "tests.fraud.flow:V2_ONLY"],
            cwd=ROOT, check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        output = (refused.stdout + refused.stderr).decode()
        assert (
            "3 saga(s) begun under checkout v1 are still in flight and this build does not"
            " define v1" in output
        ), output

        app.start("--flow", "tests.fraud.flow:FLOW")
        await app.wait_healthy()
        new = await place_orders(app.url, 2)
        await wait_for(lambda: terminal(data_dir, old + new), deadline=60, what="all finished")
    finally:
        app.kill()
    statuses = query(data_dir, "order", "SELECT order_id, status FROM orders")
    assert sorted(s for _, s in statuses) == ["COMPLETED"] * 5, app.tail()
    checked = {oid for (oid,) in query(data_dir, "fraud", "SELECT order_id FROM checks")}
    assert checked == set(new), "only sagas begun under v2 run the fraud check"
    versions = dict(
        query(data_dir, "checkout", "SELECT saga_id, definition_version FROM tracked_sagas")
    )
    assert {oid: versions[oid] for oid in old + new} == {
        **dict.fromkeys(old, 1), **dict.fromkeys(new, 2),
    }  # fmt: skip
    if saga_mode == "orchestration":
        rows = dict(query(data_dir, "checkout", "SELECT saga_id, definition_version FROM sagas"))
        assert rows == {**dict.fromkeys(old, 1), **dict.fromkeys(new, 2)}
