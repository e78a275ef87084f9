"""The ``saga-checkout`` CLI, run through its console script against a real app process."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cli.client import admin_token
from tests.process import AppProcess, free_port
from tests.support import order_body, place, wait_for

pytestmark = pytest.mark.anyio

CLI = Path(sys.executable).parent / "saga-checkout"


class Cli:
    """Runs the console script against one server and keeps what it printed."""

    def __init__(self, url: str, data_dir: Path | None = None) -> None:
        self.url = url
        # The CLI finds the admin token where the app keeps it (once it has one).
        self.data_dir = data_dir or Path("data")

    def headers(self) -> dict[str, str]:
        token = admin_token(None, None, self.data_dir)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def run(self, *args: str, expect: int = 0) -> tuple[str, str]:
        done = await anyio.run_process(
            [str(CLI), "--url", self.url, "--data-dir", str(self.data_dir), *args], check=False
        )
        stdout, stderr = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == expect, f"exit {done.returncode}\n{stdout}\n{stderr}"
        return stdout, stderr

    async def json(self, *args: str) -> Any:
        stdout, _ = await self.run("--json", *args)
        return json.loads(stdout)


async def _app(tmp_path: Path, *args: str) -> AsyncIterator[AppProcess]:
    app = AppProcess(tmp_path / "data", tmp_path / "app.log", *args)
    app.start()
    try:
        await app.wait_healthy()
        yield app
    finally:
        app.stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[AppProcess]:
    async for running in _app(tmp_path):
        yield running


@pytest.fixture
async def stuck_app(tmp_path: Path) -> AsyncIterator[AppProcess]:
    """Shipping fails every delivery and gives up at once; sagas count as stuck after 1 s."""
    async for running in _app(
        tmp_path, "--chaos", "shipping.ScheduleShipment:exception=1.0", "--retry",
        "attempts=1", "--timeouts", "step=600,attempts=3,saga=3600", "--stuck-after", "1",
    ):  # fmt: skip
        yield running


async def test_an_unreachable_server_is_one_line_and_a_non_zero_exit() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    stdout, stderr = await Cli(url).run("sagas", "list", expect=1)
    assert stderr.strip() == f"cannot reach {url}: is it running?"
    assert stdout == ""


@pytest.mark.slow
async def test_an_operator_seeds_places_orders_and_reads_them_back(app: AppProcess) -> None:
    cli = Cli(app.url, app.data_dir)
    assert await cli.json("seed", "--products", "4", "--customers", "3") == {
        "products": 4, "customers": 3,
    }  # fmt: skip
    count, fraction = 20, 0.25
    summary = await cli.json(
        "orders", "place", "--count", str(count), "--concurrency", "4",
        "--fail-fraction", str(fraction), "--products", "4", "--customers", "3",
    )  # fmt: skip
    failing = math.floor(count * fraction)
    assert summary["placed"] == count
    assert summary["completed"] == count - failing
    assert summary["cancelled_by_reason"] == {"shipping failed: country_not_served": failing}
    assert 0 < summary["p50_seconds"] <= summary["p99_seconds"]
    assert summary["sagas_per_second"] > 0

    human, _ = await cli.run(
        "orders", "place", "--count", "4", "--fail-fraction", "0.5", "--products", "4",
        "--customers", "3",
    )  # fmt: skip
    for label in ("completed", "cancelled: shipping failed: country_not_served", "sagas/s", "p50",
                  "p99"):  # fmt: skip
        assert label in human

    compensated = await cli.json("sagas", "list", "--status", "COMPENSATED")
    assert len(compensated) == failing + 2
    order_id = compensated[0]["order_id"]
    shown, _ = await cli.run("orders", "show", order_id)
    assert "CANCELLED" in shown
    assert "country_not_served" in shown
    assert "inventory.ReleaseStock" in shown
    assert "compensation" in shown
    saga = await cli.json("sagas", "show", order_id)
    assert saga["timeline"][0]["type"] == "order.OrderCreated"

    completed = (await cli.json("sagas", "list", "--status", "COMPLETED"))[0]["order_id"]
    _, stderr = await cli.run("orders", "cancel", completed, expect=1)
    assert stderr.startswith(f"error: POST /orders/{completed}/cancel: 409 order is past the point")
    cancelled, _ = await cli.run("orders", "cancel", order_id, "--reason", "changed my mind")
    assert cancelled.strip() == (
        f"order {order_id}: CANCELLED (shipping failed: country_not_served)"
    )

    table, _ = await cli.run("sagas", "list", "--status", "COMPLETED")
    assert f"{count - failing + 2} sagas" in table
    assert (await cli.json("sagas", "abort", order_id))["action"] == "AbortSaga"
    assert await cli.json("dead-letters", "list") == []


@pytest.mark.slow
async def test_api_errors_and_routes_this_server_lacks_are_one_clear_line(
    app: AppProcess,
) -> None:
    cli = Cli(app.url, app.data_dir)
    _, stderr = await cli.run("orders", "show", "no-such-order", expect=1)
    assert stderr.strip() == "error: GET /orders/no-such-order: 404 order no-such-order not found"
    _, stderr = await cli.run("sagas", "list", "--status", "LOST", expect=1)
    assert stderr.startswith("error: GET /sagas: 400")
    assert len(stderr.strip().splitlines()) == 1
    _, stderr = await cli.run("orders", "cancel", "some-order", expect=1)
    assert stderr.startswith("error: POST /orders/some-order/cancel: 404 ")
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
async def test_an_operator_finds_stuck_sagas_and_dead_letters_and_acts_on_them(
    stuck_app: AppProcess,
) -> None:
    cli = Cli(stuck_app.url, stuck_app.data_dir)
    await cli.json("seed", "--products", "2", "--customers", "2")
    # Two orders that reach shipping, whose command then dies: their sagas wait.
    assert len(await _place_without_waiting(cli, 2)) == 2

    async def letters() -> list[Any]:
        found: list[Any] = await cli.json("dead-letters", "list")
        return found

    await wait_for(lambda: _has(letters, 2), deadline=60, what="two dead letters")
    dead = await letters()
    assert {letter["type"] for letter in dead} == {"shipping.ScheduleShipment"}
    await wait_for(lambda: _has(lambda: cli.json("sagas", "list", "--status", "STUCK"), 2),
                   deadline=60, what="two stuck sagas")  # fmt: skip

    first, second = dead
    replayed, _ = await cli.run("dead-letters", "replay", first["id"])
    assert replayed.strip() == f"replay {first['id']}: now RETRYING"
    assert (await cli.json("dead-letters", "discard", second["id"]))["status"] == "DISCARDED"

    aborted, _ = await cli.run("sagas", "abort", second["order_id"], "--reason", "by the test")
    assert aborted.strip() == f"abort of saga {second['order_id']} accepted"

    async def compensated() -> bool:
        rows = await cli.json("sagas", "list", "--status", "COMPENSATED")
        return any(row["order_id"] == second["order_id"] for row in rows)

    await wait_for(compensated, deadline=60, what="the aborted saga compensated")
    shown = await cli.json("orders", "show", second["order_id"])
    assert shown["order"]["status"] == "CANCELLED"


@pytest.fixture
async def parking_app(tmp_path: Path) -> AsyncIterator[AppProcess]:
    """Refunds fail every time and compensations are tried once: an undone saga parks."""
    async for running in _app(
        tmp_path, "--chaos", "payment.RefundPayment:exception=1.0", "--retry", "attempts=1",
        "--timeouts", "step=1,attempts=1,undo=1,saga=3600",
    ):  # fmt: skip
        yield running


@pytest.mark.slow
async def test_an_operator_resolves_a_parked_saga_by_hand(parking_app: AppProcess) -> None:
    cli = Cli(parking_app.url, parking_app.data_dir)
    await cli.json("seed", "--products", "1", "--customers", "1")
    async with httpx.AsyncClient(base_url=cli.url, headers=cli.headers()) as client:
        order_id = await place(client, order_body("customer-1", {"sku-1": 1}, country="AQ"))

    async def parked() -> bool:
        rows = await cli.json("sagas", "list", "--status", "PARKED")
        return [row["order_id"] for row in rows] == [order_id]

    await wait_for(parked, deadline=60, what="the saga parked")
    saga = (await cli.json("sagas", "show", order_id))["saga"]
    outcomes = {step["name"]: step["outcome"] for step in saga["steps"]}
    assert outcomes["payment"] == "not undone"
    shown, _ = await cli.run("sagas", "show", order_id)
    assert "not undone" in shown

    note = "refunded by hand in the payment provider's console"
    resolved, _ = await cli.run("sagas", "resolve", order_id, "--note", note)
    assert resolved.strip() == f"resolve of saga {order_id} accepted"

    async def compensated() -> bool:
        detail = (await cli.json("sagas", "show", order_id))["saga"]
        return bool(detail["status"] == "COMPENSATED")

    await wait_for(compensated, deadline=60, what="the resolved saga compensated")
    assert (await cli.json("sagas", "show", order_id))["saga"]["notes"] == [note]


async def _has(read: Any, n: int) -> bool:
    return len(await read()) >= n


async def _place_without_waiting(cli: Cli, count: int) -> list[str]:
    """Place orders through the API directly (``orders place`` waits for their end)."""
    async with httpx.AsyncClient(base_url=cli.url, headers=cli.headers()) as client:
        return [
            await place(client, order_body(f"customer-{n + 1}", {f"sku-{n + 1}": 1}))
            for n in range(count)
        ]


async def test_diagram_prints_the_mermaid_of_the_saga_definition() -> None:
    stdout, _ = await Cli("http://127.0.0.1:1").run("diagram", "--saga", "choreography")
    assert stdout.startswith("```mermaid\nsequenceDiagram")
    assert "choreography" in stdout
    assert "orchestration" not in stdout


@pytest.mark.slow
async def test_serve_runs_the_app_with_main_py_options(tmp_path: Path) -> None:
    port = free_port()
    process = await anyio.open_process(
        [str(CLI), "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port),
         "--saga", "choreography", "--log-level", "WARNING"],
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def healthy() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, deadline=30, what="the served app healthy")
            assert (await client.get("/health")).json()["saga"] == "choreography"
    finally:
        process.terminate()
        await process.wait()
