"""Running it: a clean shutdown on SIGTERM and SIGINT, and the seeded business faults."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from bench.invariants import audit
from main import Settings, create_app
from tests.process import AppProcess
from tests.support import (
    ADMIN,
    admin_client,
    final_order,
    order_body,
    place,
    quiescent,
    seed,
    wait_for,
)

pytestmark = pytest.mark.anyio


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_shuts_the_app_down_cleanly_and_a_restart_carries_on(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    app = AppProcess(data_dir, tmp_path / "app.log", "--log-level", "INFO")
    app.start()
    try:
        await app.wait_healthy()
        async with httpx.AsyncClient(headers=ADMIN, base_url=app.url, timeout=10) as client:
            await seed(client, {"mug": (100, 5)}, {"ada": 1_000})
            order_id = await place(client, order_body("ada", {"mug": 1}))
            assert (await final_order(client, order_id))["status"] == "COMPLETED"
        assert app.proc is not None
        app.proc.send_signal(signum)
        assert await app.wait_exit(deadline=15) is not None, "the app did not exit"
        assert "Application shutdown complete" in app.tail(), app.tail()
        app.start()
        await app.wait_healthy()
        async with httpx.AsyncClient(headers=ADMIN, base_url=app.url, timeout=10) as client:
            assert (await client.get(f"/orders/{order_id}")).json()["status"] == "COMPLETED"
    finally:
        app.stop()
    assert audit(data_dir, initial_stock={"mug": 5}, initial_balance={"ada": 1_000}) == []


async def _outcomes(data_dir: Path, faults: str, seed_: int) -> list[tuple[str, str | None]]:
    settings = Settings(data_dir=data_dir, faults=faults, fault_seed=seed_)
    async with admin_client(create_app(settings)) as client:
        await seed(client, {"mug": (100, 1_000)}, {"ada": 1_000_000})
        ids = [await place(client, order_body("ada", {"mug": 1})) for _ in range(100)]
        finals = [await final_order(client, oid) for oid in ids]
        await wait_for(lambda: quiescent(data_dir))
    assert audit(data_dir, initial_stock={"mug": 1_000}, initial_balance={"ada": 1_000_000}) == []
    return [(f["status"], f["reason"]) for f in finals]


async def test_no_faults_by_default(tmp_path: Path) -> None:
    assert {s for s, _ in await _outcomes(tmp_path / "a", "", 0)} == {"COMPLETED"}


async def test_seeded_faults_fail_steps_at_their_rates_and_compensate(tmp_path: Path) -> None:
    outcomes = await _outcomes(tmp_path / "a", "payment=0.2,stock=0.2,shipping=0.2", 7)
    reasons = {reason for status, reason in outcomes if status == "CANCELLED"}
    assert reasons == {
        "payment failed: injected_fault",
        "stock failed: injected_fault",
        "shipping failed: injected_fault",
    }
    assert 20 <= sum(status == "CANCELLED" for status, _ in outcomes) <= 80  # about 49


async def test_a_step_with_rate_one_always_fails(tmp_path: Path) -> None:
    outcomes = await _outcomes(tmp_path / "a", "shipping=1", 3)
    assert set(outcomes) == {("CANCELLED", "shipping failed: injected_fault")}
