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
the module's local transaction (inbox + effect + outbox) committed, at most once a
second (``commit_interval``) and whenever the consumer has caught up: a crash in
between redelivers, and the inbox drops the duplicate. The relay's envelopes go
out through an idempotent producer (``acks=all``), and the outbox rows are
marked dispatched only once the broker has acknowledged them.

Connection security (``KafkaSecurity``): PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL,
with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; the username and password come from
the environment or a file, never from the command line; SSL verifies the broker
against a CA file (or the system's). ``check_access`` connects once at start so that
wrong credentials stop the process with one clear line instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
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

__all__ = [
    "PASSWORD_ENV",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "USERNAME_ENV",
    "KafkaAccessError",
    "KafkaSecurity",
    "KafkaSettings",
    "KafkaTransport",
    "check_access",
]

log = logging.getLogger(__name__)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
USERNAME_ENV = "SAGA_KAFKA_USERNAME"
PASSWORD_ENV = "SAGA_KAFKA_PASSWORD"  # noqa: S105 - a variable name, not a secret
_REFUSED = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    ssl.SSLCertVerificationError,
)


class KafkaAccessError(Exception):
    """Raised when the security settings are incomplete or the broker refuses them."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How to connect to the broker: protocol, SASL mechanism and credentials, CA file."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def load(
        cls,
        protocol: str = "PLAINTEXT",
        mechanism: str = "PLAIN",
        *,
        credentials_file: Path | None = None,
        ca_file: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> KafkaSecurity:
        """Credentials from ``SAGA_KAFKA_USERNAME`` / ``SAGA_KAFKA_PASSWORD``, else from
        ``credentials_file`` (lines ``username=...`` and ``password=...``)."""
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaAccessError(f"unknown security protocol {protocol!r}")
        if mechanism not in SASL_MECHANISMS:
            raise KafkaAccessError(f"unknown SASL mechanism {mechanism!r}")
        username, password = environ.get(USERNAME_ENV), environ.get(PASSWORD_ENV)
        if credentials_file is not None and not (username and password):
            username, password = _read_credentials(credentials_file)
        if protocol.startswith("SASL_") and not (username and password):
            raise KafkaAccessError(
                f"{protocol} needs a username and a password: set {USERNAME_ENV} and"
                f" {PASSWORD_ENV}, or --kafka-credentials-file"
            )
        if ca_file is not None and not ca_file.is_file():
            raise KafkaAccessError(f"the CA file {ca_file} does not exist")
        return cls(protocol, mechanism, username, password, ca_file)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer, admin client and connection."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        if self.protocol.endswith("SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ca_file) if self.ca_file else None
            )
        return options


def _read_credentials(path: Path) -> tuple[str | None, str | None]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise KafkaAccessError(
            f"cannot read the Kafka credentials file {path}: {exc.strerror}"
        ) from None
    values = dict(line.partition("=")[::2] for line in lines if "=" in line)
    return values.get("username", "").strip() or None, values.get("password", "").strip() or None


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    # Partitions of each topic this transport creates: how many processes can share one
    # module's consumer group. Every fetch names each partition it reads, full or not, and
    # the tracker reads every topic: 8 gave about 30 % fewer sagas/s than 2 in five
    # processes (bench/README.md). Topics that exist keep theirs.
    partitions: int = 2
    replication: int = 1
    prefix: str = "saga."
    client_id: str = "saga-checkout"
    max_batch: int = 500
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # retention.ms of the topics this transport creates (None: the broker's
    # default). Must be shorter than the inbox's dedup window (bus/retention.py).
    retention_ms: int | None = None
    # Seconds between a consumer's offset commits (0: after every batch), and whenever
    # it has caught up. Fewer commits cost the broker fewer writes (+25-30 % sagas/s in
    # five processes, bench/README.md); a crash redelivers what was handled since the
    # last one, and the inboxes drop it as they drop any duplicate.
    commit_interval: float = 1.0


@dataclass
class _Subscription:
    name: str
    types: frozenset[str] | None
    handler: BatchHandler
    topics: list[str] = field(default_factory=list)


async def check_access(settings: KafkaSettings, patience: float = 15.0) -> bool:
    """Connect to each bootstrap broker once with our security settings.

    Raises ``KafkaAccessError`` if a broker refuses them (wrong password, unknown
    mechanism, untrusted certificate); returns False if none could be reached (it
    may not be up yet: the transport keeps trying), True otherwise.
    """
    security = settings.security
    for address in settings.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with anyio.fail_after(patience):
                conn = await create_conn(
                    host, int(port), client_id=settings.client_id,
                    request_timeout_ms=int(patience * 1000), **security.client_options(),
                )  # fmt: skip
        except _REFUSED as exc:
            who = f"user {security.username!r} with {security.mechanism}" if security.sasl else ""
            raise KafkaAccessError(
                f"the broker at {address} refused the connection ({security.protocol}"
                f"{', ' + who if who else ''}): {exc}"
            ) from None
        except (OSError, KafkaError, TimeoutError) as exc:
            log.warning("kafka: %s not reachable yet (%r)", address, exc)
            continue
        conn.close()
        return True
    return False


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
            **self.settings.security.client_options(),
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

    async def check_access(self, patience: float = 15.0) -> bool:
        """See ``check_access``."""
        return await check_access(self.settings, patience)

    async def ensure_topics(self) -> None:
        """Create every topic the registry needs (idempotent), before anything else."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap, **self.settings.security.client_options()
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in self.all_topics() if t not in existing]
            retention = self.settings.retention_ms
            configs = {} if retention is None else {"retention.ms": str(retention)}
            if missing:
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            self.settings.partitions,
                            self.settings.replication,
                            topic_configs=configs,
                        )
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
            **self.settings.security.client_options(),
        )
        await consumer.start()
        try:
            async with anyio.create_task_group() as beside:
                beside.start_soon(self._watch_lag, consumer, sub)
                interval = self.settings.commit_interval
                committed_at, handled = time.monotonic(), False
                while True:
                    records = await consumer.getmany(
                        timeout_ms=500, max_records=self.settings.max_batch
                    )
                    if records:
                        batch = [
                            envelope
                            for partition_records in records.values()
                            for record in partition_records
                            if (envelope := self._envelope(record, sub)) is not None
                        ]
                        await self._handle(sub, batch)
                        handled = True
                    # The positions are those of handled records only: nothing is
                    # fetched between a handler's return and this commit.
                    if handled and (not records or time.monotonic() - committed_at >= interval):
                        await consumer.commit()
                        committed_at, handled = time.monotonic(), False
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
        return envelope_from_headers(
            record.headers, key, record.value or b"", self.registry, partition=record.partition
        )
