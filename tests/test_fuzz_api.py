"""Schemathesis against the served OpenAPI schema, with all its checks: no 5xx, every
response (status code, content type, body) as documented, the admin token sent.

The app runs as a real subprocess (``python main.py``) over its own data dir, seeded
with a product and a customer so that some generated orders go through. Examples
per operation are bounded (``FUZZ_EXAMPLES``, 25 by default) to fit CI's time.

The operations are collected from the app's schema built in process (schemathesis's
lazy ``from_fixture`` loader does not work with pytest 9); a first test checks that it
is exactly the schema the subprocess serves.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from main import Settings, create_app
from tests.process import AppProcess
from tests.support import ADMIN, ADMIN_TOKEN

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    app = AppProcess(root / "data", root / "app.log", "--log-level", "WARNING")
    app.start()
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=app.url, headers=ADMIN, timeout=10) as client:
            while True:
                assert app.alive(), app.tail()
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, app.tail()
                time.sleep(0.05)
            client.put("/products/mug", json={"name": "Mug", "price_cents": 100, "stock": 10**9})
            client.put("/customers/ada", json={"name": "Ada", "balance_cents": 10**12})
        yield app.url
    finally:
        app.stop()
        print(app.tail(40))


def _schema() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(data_dir=Path(data_dir)))
        return app.openapi_schema.to_schema()


OPENAPI = _schema()
# A schema-valid order may still name an unknown sku or customer: that 422 is right.
# The token goes through the schema's security scheme (not forced onto every request),
# so that schemathesis can also check that an admin operation refuses a request without it.
CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN}}},
        "operations": [
            {
                "include-operation-id": "placeOrder",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "404", "409", "422"]
                    }
                },
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


def test_the_fuzzed_schema_is_the_one_the_app_serves(served: str) -> None:
    assert httpx.get(f"{served}/schema/openapi.json").json() == OPENAPI


# Statuses seen per operation: the last test checks that the token did get through.
SEEN: dict[str, set[int]] = {}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(
    served: str, case: schemathesis.Case[Any]
) -> None:
    response = case.call_and_validate(base_url=served)
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    SEEN.setdefault(operation, set()).add(response.status_code)


def test_every_operation_was_reached_past_the_access_guard() -> None:
    paths: dict[str, dict[str, Any]] = OPENAPI["paths"]  # type: ignore[assignment]
    operations = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}

    assert set(SEEN) == operations
    assert {operation for operation, statuses in SEEN.items() if statuses <= {401}} == set()
