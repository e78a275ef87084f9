"""One contract, every transport: what the saga relies on from the bus, checked against
the in-process transport and against Kafka on a real broker."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from bus.consumer import Consumer
from bus.kafka import KafkaSettings, KafkaTransport
from bus.local import LocalTransport
from bus.memory import InMemoryTransport
from bus.messages import (
    ENVELOPE_COLUMNS,
    Command,
    Envelope,
    Event,
    MessageRegistry,
    Undecodable,
    envelope_row,
)
from bus.ports import Transport
from bus.relay import OutboxRelay
from bus.sqlite import Database, Tx
from bus.tables import add_bus_tables
from tests.kafka_broker import ensure_broker
from tests.support import wait_for

pytestmark = pytest.mark.anyio


class Charge(Command, frozen=True, kw_only=True):
    TYPE = "ledger.Charge"
    order_id: str
    n: int


class Charged(Event, frozen=True, kw_only=True):
    TYPE = "ledger.Charged"
    order_id: str
    n: int


REGISTRY = MessageRegistry.from_contracts([Charge, Charged])


def _metadata() -> MetaData:
    metadata = MetaData()
    Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("consumer", String),
        Column("order_id", String),
        Column("n", Integer),
    )
    add_bus_tables(metadata)
    return metadata


TransportFactory = Callable[[], Transport]
ELSEWHERE = "elsewhere.sqlite3"


def inject(transport: Transport, directory: Path, envelopes: Sequence[Envelope]) -> int:
    """Hand the transport envelopes besides the relay's (copies, or what a broken producer
    sent); return how many deliveries that makes.

    The local transport carries only what is in an outbox: there the envelopes become rows
    of another module's outbox, once per message id (what a consumer then sees is the same:
    a message id again, or a payload it cannot read).
    """
    if not isinstance(transport, LocalTransport):
        transport.publish(envelopes, lambda _: None)
        return len(envelopes)
    once = list({envelope.message_id: envelope for envelope in envelopes}.values())
    path = directory / ELSEWHERE
    engine = create_engine(f"sqlite:///{path}")
    _metadata().create_all(engine)
    engine.dispose()
    insert = (
        f"INSERT INTO outbox ({', '.join(ENVELOPE_COLUMNS)})"
        f" VALUES ({', '.join('?' for _ in ENVELOPE_COLUMNS)})"
    )
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(insert, [envelope_row(envelope) for envelope in once])
    return len(once)


@pytest.fixture(
    params=[
        "memory",
        # Processes on one machine reading each other's outboxes (bus/local.py).
        "local",
        pytest.param("kafka", marks=pytest.mark.kafka),
        # Offsets committed after every batch instead of once a second: the same contract.
        pytest.param("kafka-commit-every-batch", marks=pytest.mark.kafka),
    ]
)
def new_transport(request: pytest.FixtureRequest, tmp_path: Path) -> TransportFactory:
    """Makes the transport of one process; every call is a new process on the same bus."""
    if request.param == "memory":
        return lambda: InMemoryTransport(REGISTRY)
    if request.param == "local":
        # The tests' module database, "ledger", is tmp_path / "n.sqlite3"; "elsewhere"
        # is another module's, written only by ``inject``.
        sources = {"ledger": tmp_path / "n.sqlite3", "elsewhere": tmp_path / ELSEWHERE}
        return lambda: LocalTransport(REGISTRY, sources, tmp_path / "bus")
    settings = KafkaSettings(
        bootstrap=ensure_broker(),
        partitions=3,
        prefix=f"contract-{uuid.uuid4().hex[:8]}.",
        commit_interval=0.0 if request.param == "kafka-commit-every-batch" else 1.0,
    )
    return lambda: KafkaTransport(REGISTRY, settings)


@dataclass
class Node:
    """One process: a module database with its relay and its consumers on a transport."""

    db: Database
    relay: OutboxRelay
    consumers: dict[str, Consumer]
    taken: list[str]  # message ids handed to a handler
    handled: list[str]  # message ids a handler returned from


def _record(name: str, tx: Tx, message: Charge | Charged) -> None:
    tx.execute(
        "INSERT INTO effects (consumer, order_id, n) VALUES (?,?,?)",
        (name, message.order_id, message.n),
    )


@asynccontextmanager
async def node(
    path: Path,
    transport: Transport,
    subscriptions: dict[str, list[str]],
    gate: anyio.Event | None = None,
) -> AsyncIterator[Node]:
    async with Database(path, "ledger", _metadata()) as db, anyio.create_task_group() as tg:
        relay = OutboxRelay(db, transport, REGISTRY)
        consumers = {}
        taken: list[str] = []
        handled: list[str] = []
        for name, types in subscriptions.items():
            consumer = Consumer(name, db, dict.fromkeys(types, partial(_record, name)), REGISTRY)

            async def handler(batch: Sequence[Envelope], consumer: Consumer = consumer) -> None:
                taken.extend(e.message_id for e in batch)
                if gate is not None:
                    await gate.wait()  # a handler that never gets to commit
                await consumer(batch)
                handled.extend(e.message_id for e in batch)

            transport.subscribe(name, consumer.types, handler)
            consumers[name] = consumer
        await relay.recover()
        tg.start_soon(transport.run)
        try:
            yield Node(db, relay, consumers, taken, handled)
        finally:
            tg.cancel_scope.cancel()


def _effects(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT consumer, order_id, n FROM effects ORDER BY id").fetchall()


def _undispatched(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute(
            "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
        ).fetchone()[0]
        return count


async def _emit(db: Database, *messages: Charge | Charged) -> list[Envelope]:
    def emit(tx: Tx) -> list[Envelope]:
        return [tx.emit(message) for message in messages]

    return await db.transact(emit)


async def test_events_fan_out_and_commands_reach_their_one_handler(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    subs = {"a": [Charge.TYPE, Charged.TYPE], "b": [Charged.TYPE]}
    async with node(path, new_transport(), subs) as n:
        await _emit(n.db, Charge(order_id="o1", n=1), Charged(order_id="o1", n=2))
        await wait_for(lambda: len(_effects(path)) == 3, deadline=30)
        await wait_for(lambda: _undispatched(path) == 0, deadline=30)
    assert sorted(_effects(path)) == [("a", "o1", 1), ("a", "o1", 2), ("b", "o1", 2)]


async def test_messages_with_one_key_are_handled_in_publish_order(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    async with node(path, new_transport(), {"a": [Charged.TYPE]}) as n:
        for i in range(60):
            await _emit(n.db, Charged(order_id=f"o{i % 4}", n=i))
        await wait_for(lambda: len(_effects(path)) == 60, deadline=30)
    effects = _effects(path)
    for key in ("o0", "o1", "o2", "o3"):
        ns = [n for _, k, n in effects if k == key]
        assert ns == sorted(ns)


async def test_a_crash_before_the_handler_commits_redelivers_with_one_effect(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    stuck = anyio.Event()  # never set: the first process dies mid-handler
    async with node(path, new_transport(), {"a": [Charged.TYPE]}, gate=stuck) as n:
        await _emit(n.db, *(Charged(order_id="o1", n=i) for i in range(5)))
        # The first process takes the batch; nothing of it can commit.
        await wait_for(lambda: len(n.taken) >= 1, deadline=30)
    assert _effects(path) == []
    async with node(path, new_transport(), {"a": [Charged.TYPE]}):
        await wait_for(lambda: len(_effects(path)) >= 5, deadline=30)
        await wait_for(lambda: _undispatched(path) == 0, deadline=30)
    assert _effects(path) == [("a", "o1", i) for i in range(5)]


async def test_a_message_delivered_twice_has_one_effect(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    transport = new_transport()
    async with node(path, transport, {"a": [Charged.TYPE]}) as n:
        (envelope,) = await _emit(n.db, Charged(order_id="o1", n=7))
        copies = inject(transport, tmp_path, [envelope, envelope])
        # The relayed message and the copies have been handled: one effect.
        await wait_for(lambda: n.handled.count(envelope.message_id) >= 1 + copies, deadline=30)
    assert _effects(path) == [("a", "o1", 7)]


async def test_a_restarted_consumer_carries_on_without_losing_or_repeating(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    async with node(path, new_transport(), {"a": [Charged.TYPE]}) as n:
        await _emit(n.db, *(Charged(order_id=f"o{i}", n=i) for i in range(10)))
        await wait_for(lambda: len(_effects(path)) == 10, deadline=30)
        await wait_for(lambda: _undispatched(path) == 0, deadline=30)
    async with node(path, new_transport(), {"a": [Charged.TYPE]}) as n:
        await _emit(n.db, *(Charged(order_id=f"o{i}", n=i) for i in range(10, 20)))
        await wait_for(lambda: len(_effects(path)) == 20, deadline=30)
        await wait_for(lambda: _undispatched(path) == 0, deadline=30)
    assert sorted(n for _, _, n in _effects(path)) == list(range(20))


async def test_a_payload_that_cannot_be_decoded_is_dead_lettered_and_others_flow(
    tmp_path: Path, new_transport: TransportFactory
) -> None:
    path = tmp_path / "n.sqlite3"
    transport = new_transport()
    # What a broker would carry from a broken producer: the payload lacks a field. A
    # transport that decodes (Kafka) must hand it over as Undecodable; the in-process
    # one never decodes, so here it is handed over as such already.
    in_process = isinstance(transport, InMemoryTransport)
    bad = Envelope(
        "bad-1", Charged.TYPE, 1, "o9", None, "elsewhere", 0.0, b'{"order_id": "o9"}',
        Undecodable(correlation_id="o9", error="missing n") if in_process
        else Charged(order_id="o9", n=0),
    )  # fmt: skip
    async with node(path, transport, {"a": [Charged.TYPE]}) as n:
        inject(transport, tmp_path, [bad])
        await _emit(n.db, Charged(order_id="o1", n=1))
        await wait_for(lambda: _effects(path) == [("a", "o1", 1)], deadline=30)
        await wait_for(lambda: _dead(path) == [("bad-1", "DEAD", 1)], deadline=30)


def _dead(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT message_id, status, attempts FROM dead_letter").fetchall()
