"""Finding (or starting) the Kafka broker the Kafka tests need.

In CI the broker must be up (``.ci/run`` starts it): a missing broker fails
the tests. Elsewhere they start it with ``scripts/kafka.sh`` when Java is
there, and skip with a clear message when it is not. A broker the tests start has
the SASL/SCRAM listener too (``KAFKA_SASL=1``), for the connection-security tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
# scripts/kafka.sh's defaults: the SASL listener on KAFKA_PORT + 2, user saga.
SASL_BOOTSTRAP = os.environ.get(
    "KAFKA_SASL_BOOTSTRAP", f"127.0.0.1:{int(BOOTSTRAP.rpartition(':')[2]) + 2}"
)
SASL_USER = os.environ.get("KAFKA_SASL_USER", "saga")
SASL_PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD", "saga-secret")
_started_here = False


def reachable(bootstrap: str = BOOTSTRAP) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def ensure_broker() -> str:
    """The bootstrap address of a running broker; starts one if it can, else skips or fails."""
    if reachable():
        return BOOTSTRAP
    if os.environ.get("CI"):
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: .ci/run starts it (scripts/kafka.sh start)")
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("Kafka tests need Java 17+ and Maven to run the broker (scripts/kafka.sh)")
    env = {**os.environ, "KAFKA_SASL": os.environ.get("KAFKA_SASL", "1")}
    result = subprocess.run(
        [str(ROOT / "scripts" / "kafka.sh"), "start"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if result.returncode != 0 or not reachable():
        pytest.fail(f"scripts/kafka.sh start failed:\n{result.stdout}\n{result.stderr}")
    global _started_here  # one broker per test session
    _started_here = True
    return BOOTSTRAP


def ensure_sasl_broker() -> str:
    """The address of the broker's SASL/SCRAM listener (``KAFKA_SASL=1``)."""
    ensure_broker()
    if not reachable(SASL_BOOTSTRAP):
        message = (
            f"no SASL listener at {SASL_BOOTSTRAP}: start the broker with"
            " KAFKA_SASL=1 scripts/kafka.sh start"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SASL_BOOTSTRAP


def stop_if_started_here() -> None:
    """Stop the broker at the end of the session if the tests started it."""
    if _started_here:
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "stop"], check=False)
