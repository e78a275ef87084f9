"""--log-format json: every line of a real process's log is a JSON object with stable keys."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.process import AppProcess
from tests.support import ADMIN, order_body, seed, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def json_lines(app: AppProcess) -> list[dict[str, Any]]:
    lines = [
        line
        for line in app.log_path.read_text().splitlines()
        if line.strip() and not line.startswith("=== run")
    ]
    return [json.loads(line) for line in lines]


async def test_json_log_lines_carry_the_order_and_message_and_uvicorn_access_uses_the_same_format(
    tmp_path,
):
    app = AppProcess(
        tmp_path / "data",
        tmp_path / "app.log",
        "--log-format", "json", "--access-log",
        # Every payment command fails at once: dead-lettered, and the saga then sits stuck.
        "--chaos", "payment.ProcessPayment:exception=1", "--retry", "attempts=1",
        "--timeouts", "step=600,attempts=1,saga=600", "--stuck-after", "1",
    )  # fmt: skip
    app.start()
    try:
        await app.wait_healthy()
        async with httpx.AsyncClient(headers=ADMIN, base_url=app.url, timeout=10) as client:
            await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
            response = await client.post("/orders", json=order_body("ada", {"mug": 1}))
            assert response.status_code == 202, response.text
            order_id = response.json()["order_id"]

            def warned(logger: str) -> bool:
                return any(
                    line["logger"] == logger and line.get("order_id") == order_id
                    for line in json_lines(app)
                )

            await wait_for(lambda: warned("bus.consumer"), deadline=30, what="dead letter logged")
            await wait_for(lambda: warned("checkout.stuck"), deadline=30, what="stuck logged")
    finally:
        app.stop()

    lines = json_lines(app)  # raises if any line is not JSON
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys(), line
        assert "color_message" not in line
    dead = next(
        line
        for line in lines
        if line["logger"] == "bus.consumer" and line.get("order_id") == order_id
    )
    assert dead["level"] == "WARNING"
    assert dead["saga_id"] == order_id
    assert dead["module"] == "payment"
    assert dead["message_type"] == "payment.ProcessPayment"
    assert len(dead["message_id"]) == 32
    assert "trace_id" not in dead  # tracing is off
    stuck = next(
        line
        for line in lines
        if line["logger"] == "checkout.stuck" and line.get("order_id") == order_id
    )
    assert stuck["level"] == "WARNING"
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("POST /orders" in line["msg"] for line in access), access[-3:]
