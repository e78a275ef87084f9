"""The Kafka topics this app creates keep messages for less than the dedup window."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bus.kafka import KafkaSettings, KafkaTransport
from bus.retention import parse_duration
from main import Settings, build_system, parse_args
from tests.kafka_broker import ensure_broker
from tests.support import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]


async def test_the_topics_the_app_creates_carry_a_retention_below_the_dedup_window() -> None:
    bootstrap = ensure_broker()
    settings = parse_args(["--bus", "kafka", "--kafka-bootstrap", bootstrap,
                           "--kafka-prefix", f"retention-{uuid.uuid4().hex[:8]}."])  # fmt: skip
    system = build_system(settings)
    transport = system.transport
    assert isinstance(transport, KafkaTransport)
    await transport.ensure_topics()
    topics = transport.all_topics()
    found: dict[str, int] = {}

    async def every_topic_has_its_retention() -> bool:
        # A freshly created topic's config can take a moment to show on a slow broker.
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})
                    for topic in topics
                ]
            )
        finally:
            await admin.close()
        for response in responses:
            # (error code, error message, resource type, topic, [(name, value, ...), ...])
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "retention.ms":
                        found[resource[3]] = int(entry[1])
        return set(found) == set(topics)

    await wait_for(every_topic_has_its_retention, deadline=60, what="topic configs")
    window_ms = parse_duration(Settings().dedup_window) * 1000
    assert all(ms == parse_duration(Settings().kafka_retention) * 1000 < window_ms
               for ms in found.values()), found  # fmt: skip
    assert isinstance(transport.settings, KafkaSettings)
