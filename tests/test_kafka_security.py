"""Kafka connection security against the local broker's SASL/SCRAM listener
(``KAFKA_SASL=1 scripts/kafka.sh start``): the saga works with the right credentials,
and a process with wrong ones refuses to start with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.kafka_broker import SASL_PASSWORD, SASL_USER, ensure_sasl_broker
from tests.process import ROOT, AppProcess
from tests.support import ADMIN, final_order, order_body, seed, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]


def sasl_args(bootstrap: str, mechanism: str) -> tuple[str, ...]:
    return (
        "--bus", "kafka", "--kafka-bootstrap", bootstrap,
        "--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", mechanism,
        "--kafka-prefix", f"sasl-{uuid.uuid4().hex[:8]}.", "--kafka-partitions", "2",
        "--log-level", "WARNING",
    )  # fmt: skip


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_the_saga_runs_over_kafka_with_the_right_scram_credentials_from_a_file(
    tmp_path: Path, mechanism: str
) -> None:
    bootstrap = ensure_sasl_broker()
    credentials = tmp_path / "kafka-credentials"
    credentials.write_text(f"username={SASL_USER}\npassword={SASL_PASSWORD}\n")
    credentials.chmod(0o600)
    app = AppProcess(
        tmp_path / "data", tmp_path / "app.log", *sasl_args(bootstrap, mechanism),
        "--kafka-credentials-file", str(credentials),
    )  # fmt: skip
    app.start()
    try:
        await app.wait_healthy(deadline=60)
        async with httpx.AsyncClient(base_url=app.url, headers=ADMIN, timeout=30) as client:
            await seed(client, {"mug": (100, 5)}, {"ada": 1_000})
            placed: list[httpx.Response] = []

            async def accepted() -> bool:
                # The order module learns of the product and the customer over Kafka.
                placed[:] = [await client.post("/orders", json=order_body("ada", {"mug": 2}))]
                return placed[0].status_code == 202

            await wait_for(accepted, deadline=60, what="the order module's copy of the catalog")
            order = await final_order(client, placed[0].json()["order_id"])
    finally:
        app.stop()

    assert order["status"] == "COMPLETED", app.tail()
    assert SASL_PASSWORD not in app.tail(500)


@pytest.mark.parametrize(
    ("username", "password", "mechanism"),
    [
        pytest.param(SASL_USER, "not-the-password", "SCRAM-SHA-256", id="wrong-password"),
        pytest.param("nobody", SASL_PASSWORD, "SCRAM-SHA-512", id="unknown-user"),
        pytest.param(SASL_USER, SASL_PASSWORD, "PLAIN", id="mechanism-not-enabled"),
    ],
)
def test_a_process_with_wrong_credentials_refuses_to_start_with_one_clear_line(
    tmp_path: Path, username: str, password: str, mechanism: str
) -> None:
    bootstrap = ensure_sasl_broker()
    env = {**os.environ, "SAGA_KAFKA_USERNAME": username, "SAGA_KAFKA_PASSWORD": password}
    result = subprocess.run(
        [sys.executable, "main.py", "--data-dir", str(tmp_path / "data"),
         *sasl_args(bootstrap, mechanism)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env=env,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("main.py:")]
    assert line.startswith(f"main.py: kafka: the broker at {bootstrap} refused the connection")
    assert "Traceback" not in result.stderr
    assert password not in result.stderr + result.stdout


def test_sasl_without_credentials_is_a_start_error_naming_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_KAFKA_")}
    result = subprocess.run(
        [sys.executable, "main.py", "--data-dir", str(tmp_path / "data"),
         *sasl_args("127.0.0.1:1", "SCRAM-SHA-256")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "main.py: kafka: SASL_PLAINTEXT needs a username and a password: set"
        " SAGA_KAFKA_USERNAME and SAGA_KAFKA_PASSWORD, or --kafka-credentials-file"
    )


def test_the_password_is_not_an_option() -> None:
    result = subprocess.run(
        [sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert "--kafka-password" not in result.stdout
    assert "--kafka-credentials-file" in result.stdout
