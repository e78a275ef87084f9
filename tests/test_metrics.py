"""GET /metrics after a known workload: the numbers match what happened, in both saga styles."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from main import create_app, parse_args
from telemetry import metrics
from tests.support import admin_client, final_order, order_body, place, quiescent, seed, wait_for

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def test_ten_orders_of_which_two_compensate_count_as_eight_completed_and_two_compensated(
    client, data_dir, saga_mode
):
    before = await scrape(client)
    await seed(client, {"mug": (1000, 100)}, {"ada": 100_000, "bob": 500})
    orders = [await place(client, order_body("ada", {"mug": 1})) for _ in range(8)]
    orders += [await place(client, order_body("bob", {"mug": 1})) for _ in range(2)]  # too poor
    statuses = [(await final_order(client, order_id))["status"] for order_id in orders]
    assert statuses.count("COMPLETED") == 8
    assert statuses.count("CANCELLED") == 2
    await wait_for(lambda: quiescent(data_dir), what="outboxes drained")

    def delta(samples: Samples, name: str) -> float:
        return value(samples, name, style=saga_mode) - value(before, name, style=saga_mode)

    async def all_ended() -> bool:
        samples = await scrape(client)
        return (
            delta(samples, "saga_completed_total") + delta(samples, "saga_compensated_total") >= 10
            and value(samples, "saga_in_flight", status="RUNNING") == 0
        )

    await wait_for(all_ended, what="the tracker saw every saga end")
    after = await scrape(client)

    assert delta(after, "saga_started_total") == 10
    assert delta(after, "saga_completed_total") == 8
    assert delta(after, "saga_compensated_total") == 2
    assert delta(after, "saga_parked_total") == 0
    for outcome, count in (("completed", 8), ("compensated", 2)):
        labels = {"style": saga_mode, "outcome": outcome}
        assert (
            value(after, "saga_duration_seconds_count", **labels)
            - value(before, "saga_duration_seconds_count", **labels)
            == count
        )
    # Every order went through payment: 8 succeeded, 2 failed there.
    for outcome, count in (("succeeded", 8), ("failed", 2)):
        labels = {"style": saga_mode, "step": "payment", "outcome": outcome}
        assert (
            value(after, "saga_step_duration_seconds_count", **labels)
            - value(before, "saga_step_duration_seconds_count", **labels)
            == count
        )
    # Gauges read from the databases: nothing in flight, nothing left in any outbox.
    assert value(after, "saga_in_flight", status="RUNNING") == 0
    assert value(after, "saga_in_flight", status="COMPENSATING") == 0
    assert value(after, "saga_stuck") == 0
    for module in ("order", "payment", "inventory", "shipping", "checkout"):
        assert ("bus_outbox_backlog", (("module", module),)) in after
        assert value(after, "bus_outbox_backlog", module=module) == 0
    assert total(after, "bus_dead_letters") == 0
    # The bus and the databases were busy.
    assert total(after, "bus_relay_publish_seconds_count") > total(
        before, "bus_relay_publish_seconds_count"
    )
    assert total(after, "sqlite_commit_seconds_count", database="payment") > total(
        before, "sqlite_commit_seconds_count", database="payment"
    )
    assert total(after, "sqlite_commit_batch_size_sum") > total(
        before, "sqlite_commit_batch_size_sum"
    )


async def test_metrics_carry_no_ids_as_labels(client):
    await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
    order_id = await place(client, order_body("ada", {"mug": 1}))
    await final_order(client, order_id)
    text = (await client.get("/metrics")).text
    assert order_id not in text
    labels = {
        name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name in sample.labels
    }
    allowed = {"style", "step", "outcome", "module", "consumer", "status", "database", "le"}
    allowed |= {"group", "topic", "partition"}
    assert labels <= allowed


async def test_a_dead_letter_shows_in_the_gauge_by_consumer_and_status(tmp_path):

    from main import Settings, create_app

    settings = Settings(
        data_dir=tmp_path / "data",
        chaos="payment.ProcessPayment:exception=1",
        retry="attempts=1",
    )
    async with admin_client(create_app(settings)) as client:
        await seed(client, {"mug": (1000, 5)}, {"ada": 10_000})
        before = await scrape(client)
        await place(client, order_body("ada", {"mug": 1}))

        async def dead() -> bool:
            samples = await scrape(client)
            return value(samples, "bus_dead_letters", consumer="payment", status="DEAD") == 1

        await wait_for(dead, what="the payment command dead-lettered")
        after = await scrape(client)
        assert (
            value(after, "bus_handler_errors_total", consumer="payment")
            - value(before, "bus_handler_errors_total", consumer="payment")
            >= 1
        )


def test_a_saga_moving_to_parked_counts_once_as_parked_and_times_the_step_it_left():
    from telemetry import metrics

    def parked() -> float:
        return (
            metrics.REGISTRY.get_sample_value("saga_parked_total", {"style": "choreography"}) or 0
        )

    def step_count() -> float:
        labels = {"style": "choreography", "step": "stock", "outcome": "parked"}
        value = metrics.REGISTRY.get_sample_value("saga_step_duration_seconds_count", labels)
        return value or 0

    metrics.configure(style="choreography")
    before, steps_before = parked(), step_count()
    metrics.saga_transition(("COMPENSATING", "stock", 10.0, 11.0), "PARKED", "stock", 10.0, 12.0)
    metrics.saga_transition(("PARKED", "stock", 10.0, 12.0), "PARKED", "stock", 10.0, 13.0)
    assert parked() - before == 1
    assert step_count() - steps_before == 1


async def test_a_parked_saga_counts_as_parked_and_shows_in_flight_as_parked(data_dir, saga_mode):

    from main import create_app
    from tests.test_parking import STOCK_TRIGGER, _park_an_order, _settings

    chaos = f"{STOCK_TRIGGER[saga_mode]}:delay=1;delay_s=0.5"
    async with admin_client(create_app(_settings(data_dir, saga_mode, "memory", chaos))) as client:
        before = await scrape(client)
        await _park_an_order(client, data_dir, saga_mode)

        async def counted() -> bool:
            samples = await scrape(client)
            return value(samples, "saga_in_flight", status="PARKED") == 1

        await wait_for(counted, what="the parked saga in the gauge")
        after = await scrape(client)
    parked = value(after, "saga_parked_total", style=saga_mode)
    assert parked - value(before, "saga_parked_total", style=saga_mode) == 1
    assert value(after, "saga_in_flight", status="RUNNING") == 0


async def test_no_metrics_stops_the_counters_and_keeps_the_gauges(data_dir, saga_mode):
    settings = parse_args(["--no-metrics", "--data-dir", str(data_dir), "--saga", saga_mode])
    assert settings.metrics is False
    try:
        async with admin_client(create_app(settings)) as client:
            before = await scrape(client)
            await seed(client, {"mug": (1000, 10)}, {"ada": 10_000})
            order_id = await place(client, order_body("ada", {"mug": 1}))
            assert (await final_order(client, order_id))["status"] == "COMPLETED"
            await wait_for(lambda: quiescent(data_dir), what="outboxes drained")
            after = await scrape(client)
    finally:
        metrics.configure(style=saga_mode, enabled=True)  # the other tests count
    for name in ("saga_started_total", "saga_completed_total"):
        assert value(after, name, style=saga_mode) == value(before, name, style=saga_mode)
    assert total(after, "sqlite_commit_seconds_count") == total(
        before, "sqlite_commit_seconds_count"
    )
    # Read from the databases at scrape time, whatever the switch.
    assert ("saga_in_flight", (("status", "RUNNING"),)) in after
    assert value(after, "bus_outbox_backlog", module="payment") == 0
