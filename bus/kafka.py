"""The Kafka transport: the same bus over an Apache Kafka broker, so that modules can
run as separate processes.

Topic layout: one topic per module and kind, ``<prefix><module>.commands`` and
``<prefix><module>.events`` (for example ``saga.payment.events``). A module's
events for one order then sit in one partition, in the order the module
emitted them (the record key is the order id), and a consumer that needs only
some of a topic's types skips the others without handling them. A topic per
message type would lose that per-module order across types; one topic for
everything would make every consumer read everything.

Subscriptions are consumer groups (one per module, one for the tracker), named
``<prefix><subscription>``, so that several systems can share a broker.
Offsets are committed only after the batch's handler returned, that is after
the module's local transaction (inbox + effect + outbox) committed: a crash in
between redelivers, and the inbox drops the duplicate. The relay's envelopes go
out through an idempotent producer (``acks=all``), and the outbox rows are
marked dispatched only once the broker has acknowledged them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from bus.messages import (
    Command,
    Envelope,
    MessageRegistry,
    envelope_from_headers,
    envelope_headers,
)
from bus.ports import BatchHandler, DeliveredCallback
from bus.retry import backoff

__all__ = ["KafkaSettings", "KafkaTransport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = 8
    replication: int = 1
    prefix: str = "saga."
    client_id: str = "saga-checkout"
    max_batch: int = 500


@dataclass
class _Subscription:
    name: str
    types: frozenset[str] | None
    handler: BatchHandler
    topics: list[str] = field(default_factory=list)


class KafkaTransport:
    """Publishes envelopes to Kafka topics and feeds consumer groups to handlers."""

    def __init__(self, registry: MessageRegistry, settings: KafkaSettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or KafkaSettings()
        self._subscriptions: list[_Subscription] = []
        self._outgoing: list[tuple[list[Envelope], DeliveredCallback]] = []
        self._wakeup = asyncio.Event()
        self.published = 0
        # Consumer lag: (group, topic, partition) -> records not yet consumed.
        self.lag: dict[tuple[str, str, int], int] = {}

    # -- layout ----------------------------------------------------------------

    def topic_for(self, type_name: str) -> str:
        cls = self.registry.message_class(type_name)
        module = type_name.partition(".")[0]
        kind = "commands" if issubclass(cls, Command) else "events"
        return f"{self.settings.prefix}{module}.{kind}"

    def all_topics(self) -> list[str]:
        return sorted({self.topic_for(cls.TYPE) for cls in self.registry.types})

    # -- the Transport protocol ------------------------------------------------

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        wanted = None if types is None else frozenset(types)
        topics = (
            self.all_topics() if wanted is None else sorted({self.topic_for(t) for t in wanted})
        )
        self._subscriptions.append(_Subscription(subscription, wanted, handler, topics))

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        self._outgoing.append((list(envelopes), on_delivered))
        self._wakeup.set()

    async def run(self) -> None:
        await self.ensure_topics()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            client_id=self.settings.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=1,
        )
        await producer.start()
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._publish_loop, producer)
                for sub in self._subscriptions:
                    if sub.topics:
                        task_group.start_soon(self._consume_loop, sub, name=f"kafka:{sub.name}")
        finally:
            with anyio.CancelScope(shield=True):
                await producer.stop()

    async def ensure_topics(self) -> None:
        """Create every topic the registry needs (idempotent), before anything else."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in self.all_topics() if t not in existing]
            if missing:
                await admin.create_topics(
                    [
                        NewTopic(t, self.settings.partitions, self.settings.replication)
                        for t in missing
                    ]
                )
                log.info("created topics %s", ", ".join(missing))
        finally:
            await admin.close()

    # -- producing -------------------------------------------------------------

    async def _publish_loop(self, producer: AIOKafkaProducer) -> None:
        failures = 0
        while True:
            if not self._outgoing:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._outgoing[: self.settings.max_batch]
            try:
                futures = [
                    await producer.send(
                        self.topic_for(envelope.type),
                        value=envelope.payload,
                        key=envelope.correlation_id.encode(),
                        headers=envelope_headers(envelope),
                    )
                    for envelopes, _ in batch
                    for envelope in envelopes
                ]
                await asyncio.gather(*futures)
            except KafkaError as exc:
                # Kept, in order, and sent again: the broker may have some of
                # them already, and consumers drop those duplicates.
                failures += 1
                log.warning("kafka publish failed (%r); retrying (attempt %d)", exc, failures)
                await anyio.sleep(backoff(failures, base=0.1, cap=5.0))
                continue
            failures = 0
            del self._outgoing[: len(batch)]
            for envelopes, on_delivered in batch:
                self.published += len(envelopes)
                on_delivered(envelopes)

    # -- consuming -------------------------------------------------------------

    async def _consume_loop(self, sub: _Subscription) -> None:
        consumer = AIOKafkaConsumer(
            *sub.topics,
            bootstrap_servers=self.settings.bootstrap,
            client_id=f"{self.settings.client_id}-{sub.name}",
            group_id=f"{self.settings.prefix}{sub.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_batch,
        )
        await consumer.start()
        try:
            async with anyio.create_task_group() as beside:
                beside.start_soon(self._watch_lag, consumer, sub)
                while True:
                    records = await consumer.getmany(
                        timeout_ms=500, max_records=self.settings.max_batch
                    )
                    if not records:
                        continue
                    batch = [
                        envelope
                        for partition_records in records.values()
                        for record in partition_records
                        if (envelope := self._envelope(record, sub)) is not None
                    ]
                    await self._handle(sub, batch)
                    await consumer.commit()
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.stop()

    async def _watch_lag(self, consumer: AIOKafkaConsumer, sub: _Subscription) -> None:
        """Refresh the lag gauge once a second, beside the consume loop (never in its way:
        a broker that is away only leaves the last figures in place)."""
        group = f"{self.settings.prefix}{sub.name}"
        while True:
            await anyio.sleep(1.0)
            with anyio.move_on_after(5.0):
                try:
                    await self._record_lag(consumer, group)
                except KafkaError as exc:
                    log.debug("consumer lag of %s not refreshed: %r", group, exc)

    async def _record_lag(self, consumer: AIOKafkaConsumer, group: str) -> None:
        """Records between each assigned partition's end and this group's position."""
        assigned = consumer.assignment()
        # A partition nothing was fetched from yet has no known end: ask the broker.
        unknown = [tp for tp in assigned if consumer.highwater(tp) is None]
        ends = await consumer.end_offsets(unknown) if unknown else {}
        for tp in assigned:
            end = consumer.highwater(tp)
            if end is None:
                end = ends.get(tp)
            if end is not None:
                position = await consumer.position(tp)
                self.lag[(group, tp.topic, tp.partition)] = max(0, end - position)

    async def _handle(self, sub: _Subscription, batch: list[Envelope]) -> None:
        failures = 0
        while batch:
            try:
                await sub.handler(batch)
                return
            except Exception:
                # The handler could not even park the batch (its database is
                # failing): nothing is committed; try the same batch again.
                failures += 1
                log.exception("subscription %s failed on a batch (attempt %d)", sub.name, failures)
                await anyio.sleep(backoff(failures, base=0.05, cap=5.0))

    def _envelope(
        self, record: ConsumerRecord[bytes, bytes], sub: _Subscription
    ) -> Envelope | None:
        if sub.types is not None:
            type_name = next((v for k, v in record.headers if k == "type"), b"").decode()
            if type_name not in sub.types:
                return None
        key = (record.key or b"").decode()
        return envelope_from_headers(record.headers, key, record.value or b"", self.registry)
