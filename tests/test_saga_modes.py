"""Orchestration and choreography: one behaviour, two wirings; and switching between them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from main import Settings, create_app
from tests.support import (
    ADMIN,
    admin_client,
    final_order,
    order_body,
    place,
    query,
    quiescent,
    seed,
    wait_for,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = {"mug": (1200, 4), "tea": (500, 2)}
CUSTOMERS = {"ada": 6_000, "bob": 1_000}
SCENARIO = [
    order_body("ada", {"mug": 1, "tea": 1}),
    order_body("bob", {"mug": 1}),
    order_body("ada", {"tea": 5}),
    order_body("ada", {"mug": 1}, country="AQ"),
    order_body("ada", {"mug": 2}),
    order_body("ada", {"mug": 2}),
]


async def _run_scenario(data_dir: Path, mode: str) -> dict[str, object]:
    async with admin_client(create_app(Settings(data_dir=data_dir, saga=mode))) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        outcomes = []
        for body in SCENARIO:
            order = await final_order(client, await place(client, body))
            outcomes.append((order["status"], order["reason"], order["total_cents"]))
        await wait_for(lambda: quiescent(data_dir))
    return {
        "orders": outcomes,
        "balances": query(data_dir, "payment", "SELECT * FROM accounts ORDER BY customer_id"),
        "stock": query(data_dir, "inventory", "SELECT sku, stock FROM products ORDER BY sku"),
        "ledger": query(
            data_dir, "payment", "SELECT kind, amount_cents FROM ledger ORDER BY entry_id"
        ),
    }


async def test_both_modes_reach_identical_end_states(tmp_path: Path) -> None:
    orchestrated = await _run_scenario(tmp_path / "o", "orchestration")
    choreographed = await _run_scenario(tmp_path / "c", "choreography")
    assert orchestrated == choreographed
    statuses = [status for status, _, _ in orchestrated["orders"]]  # type: ignore[attr-defined]
    assert statuses == [
        "COMPLETED",
        "CANCELLED",
        "CANCELLED",
        "CANCELLED",
        "COMPLETED",
        "CANCELLED",
    ]


async def test_switching_mode_is_allowed_once_every_saga_has_finished(data_dir: Path) -> None:
    await _run_scenario(data_dir, "orchestration")
    app = create_app(Settings(data_dir=data_dir, saga="choreography"))
    async with admin_client(app) as client:
        await seed(client, {"pen": (100, 5)}, {"cy": 1_000})
        order = await final_order(client, await place(client, order_body("cy", {"pen": 1})))
    assert order["status"] == "COMPLETED"
    assert query(data_dir, "checkout", "SELECT value FROM system_settings") == [("choreography",)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
@pytest.mark.crash
def test_switching_mode_with_a_saga_in_flight_is_refused_with_a_clear_message(
    data_dir: Path, tmp_path: Path
) -> None:
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    # The orchestrator's first commit of a saga kills the process: that saga is in flight.
    app = subprocess.Popen(
        [sys.executable, "main.py", "--data-dir", str(data_dir), "--port", str(port),
         "--crash-at", "after-commit:checkout@1", "--log-level", "WARNING"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "app did not start"
                time.sleep(0.05)
        httpx.put(
            f"{url}/products/mug",
            headers=ADMIN,
            json={"name": "Mug", "price_cents": 100, "stock": 5},
        )
        httpx.put(
            f"{url}/customers/ada", headers=ADMIN, json={"name": "Ada", "balance_cents": 1_000}
        )
        with contextlib.suppress(httpx.HTTPError):  # the process may die before it answers
            httpx.post(f"{url}/orders", json=order_body("ada", {"mug": 1}), timeout=5)
        assert app.wait(timeout=20) == -signal.SIGKILL
    finally:
        if app.poll() is None:
            app.kill()
        log.close()

    refused = subprocess.run(
        [sys.executable, "main.py", "--data-dir", str(data_dir), "--port", str(_free_port()),
         "--saga", "choreography"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert refused.returncode != 0
    assert "still in flight" in refused.stdout + refused.stderr
    assert "--saga orchestration" in refused.stdout + refused.stderr
