"""The dashboard and the CLI where checkout runs alone (``--modules checkout``) over Kafka."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import anyio
import httpx
import pytest

from tests import test_kafka_processes as five_processes
from tests.support import ADMIN, order_body, wait_for
from tests.test_kafka_processes import Cluster, _final, _place, _seed

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]

# The five-process cluster over a real broker, one process per module.
cluster = five_processes.cluster


@pytest.fixture
def bus() -> str:
    """The cluster's transport: Kafka here (the local bus runs the same processes in
    tests/test_kafka_processes.py)."""
    return "kafka"


CLI = Path(sys.executable).parent / "saga-checkout"


async def test_the_checkout_process_serves_the_dashboard_of_sagas_run_across_processes(
    cluster: Cluster, saga_mode: str
) -> None:
    await _seed(cluster)
    async with httpx.AsyncClient(timeout=10, headers=ADMIN) as client:
        done = await _place(client, cluster, order_body("ada", {"mug": 1}), uuid.uuid4().hex)
        body = order_body("cy", {"tea": 1}, country="AQ")
        undone = await _place(client, cluster, body, uuid.uuid4().hex)
        assert (await _final(client, cluster, done))["status"] == "COMPLETED"
        assert (await _final(client, cluster, undone))["status"] == "CANCELLED"

        ui = cluster.url("checkout")
        page = ""

        async def compensated() -> bool:
            nonlocal page
            page = (await client.get(f"{ui}/ui/sagas/{undone}")).text
            return 'id="saga-status">COMPENSATED' in page

        # The tracker may read the last event a moment after the order ended.
        await wait_for(compensated, deadline=60, what="the saga shown compensated")
        # The order's facts come from checkout's timeline, not from the order process.
        assert "cy" in page
        assert "country_not_served" in page
        assert f"saga style: <b>{saga_mode}</b>" in page
        listing = (await client.get(f"{ui}/ui/sagas")).text
        assert f'data-order-id="{done}"' in listing
        health = (await client.get(f"{ui}/ui/health")).text
        assert "Modules in this process: checkout." in health
        assert (await client.get(f"{cluster.url('order')}/ui")).status_code == 404

    listed = await anyio.run_process([str(CLI), "--url", ui, "sagas", "list"])
    assert done in listed.stdout.decode()
