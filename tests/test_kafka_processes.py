"""The same saga with every module in its own process, talking only through a real Kafka
broker, or through the local bus (each process reading the others' outboxes): every path
in both modes, a process killed under load, the broker restarted."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.invariants import audit
from tests.kafka_broker import ROOT, ensure_broker
from tests.process import AppProcess
from tests.support import ADMIN, order_body, quiescent, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MODULES = ("order", "payment", "inventory", "shipping", "checkout")
PRODUCTS = {"mug": (1200, 12), "tea": (500, 4)}
CUSTOMERS = {"ada": 30_000, "bob": 1_000, "cy": 8_000}


@dataclass
class Cluster:
    data_dir: Path
    processes: dict[str, AppProcess]

    def url(self, module: str) -> str:
        return self.processes[module].url

    async def start(self, module: str) -> None:
        self.processes[module].start()
        await self.processes[module].wait_healthy(deadline=60)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.tail(30)}" for name, p in self.processes.items())


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka), "local"])
def bus(request: pytest.FixtureRequest) -> str:
    """The transport between the processes."""
    return str(request.param)


@pytest.fixture
async def cluster(tmp_path: Path, saga_mode: str, bus: str) -> AsyncIterator[Cluster]:
    data_dir = tmp_path / "data"
    common: tuple[str, ...] = (
        "--saga", saga_mode, "--log-level", "WARNING", "--timeouts", "step=5,attempts=4,saga=120",
    )  # fmt: skip
    if bus == "kafka":
        common += (
            "--bus", "kafka", "--kafka-bootstrap", ensure_broker(), "--kafka-partitions", "3",
            "--kafka-prefix", f"it-{uuid.uuid4().hex[:8]}.",
        )  # fmt: skip
    else:
        common += ("--bus", bus)
    processes = {
        name: AppProcess(data_dir, tmp_path / f"{name}.log", *common, "--modules", name)
        for name in MODULES
    }
    cluster = Cluster(data_dir, processes)
    try:
        for process in processes.values():
            process.start()
        for process in processes.values():
            await process.wait_healthy(deadline=60)
        yield cluster
    finally:
        for process in processes.values():
            process.stop()


async def _seed(cluster: Cluster) -> None:
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
        for sku, (price, stock) in PRODUCTS.items():
            response = await client.put(
                f"{cluster.url('inventory')}/products/{sku}",
                json={"name": sku, "price_cents": price, "stock": stock},
            )
            assert response.status_code == 200, response.text
        for customer, balance in CUSTOMERS.items():
            response = await client.put(
                f"{cluster.url('payment')}/customers/{customer}",
                json={"name": customer, "balance_cents": balance},
            )
            assert response.status_code == 200, response.text


async def _place(
    client: httpx.AsyncClient, cluster: Cluster, body: dict[str, Any], key: str
) -> str:
    """POST until accepted: across processes the order module's copy of the catalog
    arrives a moment after the PUT, and a process may be down for a restart."""
    with anyio.fail_after(60):
        while True:
            try:
                response = await client.post(
                    f"{cluster.url('order')}/orders", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                await anyio.sleep(0.1)
                continue
            if response.status_code == 202:
                order_id: str = response.json()["order_id"]
                return order_id
            assert response.status_code == 422, response.text
            await anyio.sleep(0.1)


async def _final(client: httpx.AsyncClient, cluster: Cluster, order_id: str) -> dict[str, Any]:
    with anyio.fail_after(90):
        while True:
            try:
                url = cluster.url("order")  # a restarted process has a new port
                response = await client.get(f"{url}/orders/{order_id}", params={"wait": 5})
            except httpx.TransportError:
                await anyio.sleep(0.2)
                continue
            body: dict[str, Any] = response.json()
            if body["status"] != "PENDING":
                return body


def _audit(cluster: Cluster) -> list[str]:
    stock = {sku: n for sku, (_, n) in PRODUCTS.items()}
    return audit(cluster.data_dir, initial_stock=stock, initial_balance=CUSTOMERS)


async def test_every_saga_path_completes_across_five_processes(cluster: Cluster, bus: str) -> None:
    await _seed(cluster)
    cases = [
        (order_body("ada", {"mug": 1, "tea": 1}), "COMPLETED", None),
        (order_body("bob", {"mug": 1}), "CANCELLED", "payment failed: insufficient_funds"),
        (order_body("ada", {"tea": 9}), "CANCELLED", "stock failed: insufficient_stock"),
        (order_body("cy", {"mug": 1}, country="AQ"), "CANCELLED",
         "shipping failed: country_not_served"),
    ]  # fmt: skip
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
        ids = [await _place(client, cluster, body, uuid.uuid4().hex) for body, _, _ in cases]
        finals = [await _final(client, cluster, oid) for oid in ids]
        timeline: list[dict[str, Any]] = []

        async def tracked_to_the_end() -> bool:
            # The tracker, in the checkout process, reads the events a moment later.
            url = f"{cluster.url('checkout')}/orders/{ids[0]}/timeline"
            timeline[:] = (await client.get(url)).json()
            return bool(timeline[-1]["type"] == "order.OrderCompleted")

        await wait_for(tracked_to_the_end, deadline=30, what="the timeline's last event")
        if bus == "local":
            # Checkout's two subscriptions read every module's outbox to its end.
            lag: dict[tuple[str, str], float] = {}

            async def caught_up() -> bool:
                text = (await client.get(f"{cluster.url('checkout')}/metrics")).text
                lag.clear()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "bus_local_lag":
                            key = (sample.labels["subscription"], sample.labels["source"])
                            lag[key] = sample.value
                wanted = {(sub, m) for sub in ("checkout", "tracker") for m in MODULES}
                return set(lag) == wanted and not any(lag.values())

            await wait_for(caught_up, deadline=30, what="checkout's subscriptions caught up")
    await wait_for(lambda: quiescent(cluster.data_dir), deadline=60)

    assert [(f["status"], f["reason"]) for f in finals] == [(s, r) for _, s, r in cases]
    assert timeline[0]["type"] == "order.OrderCreated"
    assert _audit(cluster) == [], cluster.logs()


async def _load(cluster: Cluster, n: int, seed: int, during: Any) -> list[dict[str, Any]]:
    """Place ``n`` racing orders while ``during()`` disturbs the system; return them final."""
    rng = random.Random(seed)
    bodies = [
        order_body(rng.choice(list(CUSTOMERS)), {rng.choice(list(PRODUCTS)): rng.randint(1, 2)},
                   country=rng.choice(["DE", "DE", "DE", "AQ"]))
        for _ in range(n)
    ]  # fmt: skip
    ids: list[str] = []
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:

        async def place_all() -> None:
            for body in bodies:
                ids.append(await _place(client, cluster, body, uuid.uuid4().hex))

        async with anyio.create_task_group() as tg:
            tg.start_soon(place_all)
            await wait_for(lambda: len(ids) >= n // 3, deadline=60)
            await during()
        return [await _final(client, cluster, oid) for oid in ids]


@pytest.mark.parametrize("victim", MODULES)
async def test_a_process_killed_under_load_loses_and_repeats_nothing(
    cluster: Cluster, victim: str, saga_mode: str
) -> None:
    await _seed(cluster)

    async def kill_and_restart() -> None:
        assert cluster.processes[victim].kill() == -9
        await anyio.sleep(0.5)
        await cluster.start(victim)

    finals = await _load(cluster, 24, seed=MODULES.index(victim), during=kill_and_restart)
    await wait_for(lambda: quiescent(cluster.data_dir), deadline=90)

    assert {f["status"] for f in finals} <= {"COMPLETED", "CANCELLED"}
    assert any(f["status"] == "COMPLETED" for f in finals)
    assert _audit(cluster) == [], cluster.logs()


@pytest.mark.kafka
@pytest.mark.parametrize("bus", ["kafka"])
async def test_a_broker_restart_under_load_is_survived(cluster: Cluster, saga_mode: str) -> None:
    await _seed(cluster)

    async def restart_broker() -> None:
        script = ROOT / "scripts" / "kafka.sh"
        result = await anyio.run_process([str(script), "restart"], check=False)
        assert result.returncode == 0, result.stderr.decode()

    finals = await _load(cluster, 24, seed=99, during=restart_broker)
    await wait_for(lambda: quiescent(cluster.data_dir), deadline=120)

    assert {f["status"] for f in finals} <= {"COMPLETED", "CANCELLED"}
    assert _audit(cluster) == [], cluster.logs()
    assert all(p.alive() for p in cluster.processes.values())
