"""Telemetry across the five Kafka processes: an order is one trace through every process
(an operator's action included), and each process serves the metrics of its own modules
(with the consumer lag)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kafka_broker import ensure_broker
from tests.process import AppProcess
from tests.support import ADMIN, order_body, quiescent, wait_for
from tests.test_kafka_processes import MODULES, Cluster, _final, _place, _seed

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
async def traced_cluster(
    tmp_path: Path, saga_mode: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    """The five processes, each writing its spans as JSON lines to a file of its own."""
    ensure_broker()
    monkeypatch.setenv("SAGA_TRACES_FILE", str(tmp_path / "traces-{pid}.jsonl"))
    prefix = f"tt-{uuid.uuid4().hex[:8]}."
    common = (
        "--bus", "kafka", "--kafka-bootstrap", ensure_broker(), "--kafka-partitions", "3",
        "--kafka-prefix", prefix, "--saga", saga_mode, "--log-level", "WARNING",
    )  # fmt: skip
    data_dir = tmp_path / "data"
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


def spans(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("traces-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def producers(spans: list[dict[str, Any]], operation: str) -> dict[str, dict[str, Any]]:
    """The ``create`` (or ``publish``) span of each message, by message id."""
    return {
        attribute(s, "messaging.message.id"): s
        for s in spans
        if s["kind"] == "SpanKind.PRODUCER"
        and attribute(s, "messaging.operation.type") == operation
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def lag_groups(found: Samples) -> set[str]:
    """The consumer groups with a lag gauge, without the topic prefix."""
    return {labels["group"].rpartition(".")[2] for labels, _ in found.get("kafka_consumer_lag", [])}


def attribute(span: dict[str, Any], name: str) -> Any:
    return span["attributes"].get(name)


async def test_an_order_is_one_trace_across_the_five_kafka_processes(
    traced_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = traced_cluster
    await _seed(cluster)
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
        order_id = await _place(client, cluster, order_body("ada", {"mug": 1}), uuid.uuid4().hex)
        assert (await _final(client, cluster, order_id))["status"] == "COMPLETED"
        timeline: list[dict[str, Any]] = []

        async def tracked_to_the_end() -> bool:
            url = f"{cluster.url('checkout')}/orders/{order_id}/timeline"
            timeline[:] = (await client.get(url)).json()
            return bool(timeline) and timeline[-1]["type"] == "order.OrderCompleted"

        await wait_for(tracked_to_the_end, deadline=30, what="the timeline's last event")
        await wait_for(lambda: quiescent(cluster.data_dir), deadline=60)

        def every_message_processed() -> bool:
            processed = {
                attribute(s, "messaging.message.id")
                for s in spans(tmp_path)
                if attribute(s, "saga.order_id") == order_id and s["kind"] == "SpanKind.CONSUMER"
            }
            return {event["message_id"] for event in timeline} <= processed

        await wait_for(every_message_processed, deadline=30, what="every span exported")

        # An operator's abort (of a saga already finished: a no-op) joins its trace too.
        aborted = await client.post(f"{cluster.url('checkout')}/sagas/{order_id}/abort")
        assert aborted.status_code == 202, aborted.text
        abort_id = aborted.json()["message_id"]

        # Checkout's consumer handles it (the tracker recorded it as it was emitted).
        def abort_processed() -> bool:
            return any(
                attribute(s, "messaging.message.id") == abort_id
                and attribute(s, "messaging.consumer.group.name") == "checkout"
                for s in spans(tmp_path)
            )

        await wait_for(abort_processed, deadline=30, what="the abort handled")

        # A consumer's span ends inside its transaction, a moment before the COMMIT.
        async def abort_in_timeline() -> bool:
            url = f"{cluster.url('checkout')}/orders/{order_id}/timeline"
            timeline[:] = (await client.get(url)).json()
            return any(event["message_id"] == abort_id for event in timeline)

        await wait_for(abort_in_timeline, deadline=30, what="the abort in the timeline")

        # Each process serves the metrics of its own modules, the consumer lag included
        # (refreshed once a second, once the group has its partitions).
        checkout = ""

        async def lag_of_both_groups() -> bool:
            nonlocal checkout
            checkout = (await client.get(f"{cluster.url('checkout')}/metrics")).text
            return lag_groups(samples(checkout)) == {"checkout", "tracker"}

        await wait_for(lag_of_both_groups, deadline=30, what="lag of both consumer groups")
        payment = (await client.get(f"{cluster.url('payment')}/metrics")).text

    causes = {event["message_id"]: event["causation_id"] for event in timeline}
    all_spans = spans(tmp_path)
    mine = [s for s in all_spans if attribute(s, "saga.order_id") == order_id]
    # `_place` may have been refused first (422: the catalog had not reached the order
    # process yet); the accepted request is the one whose trace the order's spans are in.
    (request,) = [
        s
        for s in all_spans
        if s["kind"] == "SpanKind.SERVER"
        and s["name"] == "POST /orders"
        and s["context"]["trace_id"] in {m["context"]["trace_id"] for m in mine}
    ]
    trace_id = request["context"]["trace_id"]
    assert {s["context"]["trace_id"] for s in mine} == {trace_id}
    services = {s["resource"]["attributes"]["service.name"] for s in mine}
    assert services == {f"saga-{name}" for name in MODULES}, "spans from every process"
    by_id = {s["context"]["span_id"]: s for s in all_spans}
    created, published = producers(mine, "create"), producers(mine, "publish")
    assert set(created) == set(causes) == set(published)
    (operator,) = [s for s in mine if s["name"] == "operator abort"]
    assert operator["kind"] == "SpanKind.INTERNAL"
    partitions: dict[str, set[str]] = {}
    for message_id, cause in causes.items():
        parent = by_id[created[message_id]["parent_id"]]
        if message_id == abort_id:
            assert parent is operator
        elif cause is None:  # the order's first event (or a step sent again by a timer)
            assert parent is request or parent["kind"] == "SpanKind.INTERNAL"
        else:
            assert attribute(parent, "messaging.message.id") == cause
        assert published[message_id]["parent_id"] == created[message_id]["context"]["span_id"]
        for span in mine:
            if span["kind"] == "SpanKind.CONSUMER" and (
                attribute(span, "messaging.message.id") == message_id
            ):
                assert span["parent_id"] == created[message_id]["context"]["span_id"]
                assert attribute(span, "messaging.system") == "kafka"
                partitions.setdefault(attribute(span, "messaging.destination.name"), set()).add(
                    attribute(span, "messaging.destination.partition.id")
                )
    # The order's records are keyed by its id: one partition (of 3) per topic.
    assert all(len(found) == 1 and found <= {"0", "1", "2"} for found in partitions.values())
    # The operator's abort is a child of the span that started the saga, in another
    # process than the operator's request, which is linked to it.
    started = by_id[operator["parent_id"]]
    assert attribute(started, "saga.message_type") == "order.OrderCreated"
    assert attribute(started, "messaging.consumer.group.name") in ("checkout", "tracker")
    (abort_request,) = [
        s for s in all_spans if s["kind"] == "SpanKind.SERVER" and s["name"].endswith("/abort")
    ]
    assert abort_request["context"]["trace_id"] != trace_id
    assert [link["context"]["span_id"] for link in operator["links"]] == [
        abort_request["context"]["span_id"]
    ]

    at_checkout, at_payment = samples(checkout), samples(payment)
    assert any(v >= 1 for _, v in at_checkout["saga_started_total"])
    assert {labels["module"] for labels, _ in at_checkout["bus_outbox_backlog"]} == {"checkout"}
    assert {labels["module"] for labels, _ in at_payment["bus_outbox_backlog"]} == {"payment"}
    assert "saga_in_flight" not in at_payment, "sagas are checkout's"
    assert lag_groups(at_checkout) == {"checkout", "tracker"}
    assert all(value >= 0 for _, value in at_checkout["kafka_consumer_lag"])
