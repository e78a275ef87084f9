"""The bus's own promises: group commit, outbox, inbox, relay, retries and dead letters."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from bus.consumer import Consumer
from bus.errors import TransientError
from bus.memory import DuplicateHandlerError, InMemoryTransport
from bus.messages import Command, Envelope, Event, MessageRegistry
from bus.relay import OutboxRelay
from bus.retry import RetryPolicy
from bus.sqlite import Database, Tx
from tests.support import wait_for

pytestmark = pytest.mark.anyio


class Ping(Command, frozen=True, kw_only=True):
    TYPE = "test.Ping"
    order_id: str
    n: int


class Pinged(Event, frozen=True, kw_only=True):
    TYPE = "test.Pinged"
    order_id: str
    n: int


def _metadata() -> MetaData:
    from bus.tables import add_bus_tables

    metadata = MetaData()
    Table("effects", metadata, Column("id", Integer, primary_key=True), Column("what", String))
    add_bus_tables(metadata)
    return metadata


@pytest.fixture
def registry() -> MessageRegistry:
    return MessageRegistry.from_contracts([Ping, Pinged])


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "t.sqlite3", "test", _metadata()) as database:
        yield database


def _emit(order_id: str, n: int, tx: Tx) -> Envelope:
    return tx.emit(Pinged(order_id=order_id, n=n))


def _emit_ping(order_id: str, n: int, tx: Tx) -> Envelope:
    return tx.emit(Ping(order_id=order_id, n=n))


def _effects(db: Database) -> list[str]:
    import sqlite3

    with sqlite3.connect(db.path) as conn:
        return [what for (what,) in conn.execute("SELECT what FROM effects ORDER BY id")]


async def test_a_failing_job_rolls_back_alone_in_a_group_commit(db: Database) -> None:
    def good(name: str):
        return lambda tx: tx.execute("INSERT INTO effects (what) VALUES (?)", (name,))

    def bad(tx: Tx) -> None:
        tx.execute("INSERT INTO effects (what) VALUES ('bad')")
        raise ValueError("boom")

    outcomes = await db.run_all([(good("a"), None), (bad, None), (good("b"), None)])

    assert [o.error is None for o in outcomes] == [True, False, True]
    assert _effects(db) == ["a", "b"]
    assert db.commits == 1


async def test_an_atomic_group_stands_or_falls_together(db: Database) -> None:
    def good(name: str):
        return lambda tx: tx.execute("INSERT INTO effects (what) VALUES (?)", (name,))

    def bad(tx: Tx) -> None:
        tx.emit(Pinged(order_id="o1", n=1))
        raise ValueError("boom")

    async with anyio.create_task_group() as tg:  # beside a caller of its own, in one commit
        tg.start_soon(db.transact, good("alone"))
        outcomes = await db.run_all(
            [(good("a"), None), (bad, None), (good("b"), None)], atomic=True
        )

    assert [type(o.error) for o in outcomes] == [ValueError] * 3
    assert _effects(db) == ["alone"]
    rows = await db.transact(lambda tx: tx.execute("SELECT count(*) FROM outbox").fetchone())
    assert rows == (0,)


@pytest.mark.parametrize("direct", [False, True], ids=["committer", "direct"])
@pytest.mark.parametrize("atomic", [False, True], ids=["job", "atomic-group"])
async def test_a_group_alone_in_its_transaction_that_fails_leaves_nothing(
    db: Database, direct: bool, atomic: bool
) -> None:
    # Alone in its transaction, a group runs without a savepoint: a failure rolls
    # the whole transaction back, and the next one starts clean.
    db.direct = direct

    def bad(tx: Tx) -> None:
        tx.execute("INSERT INTO effects (what) VALUES ('bad')")
        tx.emit(Pinged(order_id="o1", n=1))
        raise ValueError("boom")

    (outcome,) = await db.run_all([(bad, None)], atomic=atomic)
    commits = db.commits
    await db.transact(lambda tx: tx.execute("INSERT INTO effects (what) VALUES ('next')"))

    assert isinstance(outcome.error, ValueError)
    assert outcome.value is None
    assert commits == 0  # nothing was committed for it
    assert _effects(db) == ["next"]
    rows = await db.transact(lambda tx: tx.execute("SELECT count(*) FROM outbox").fetchone())
    assert rows == (0,)


async def test_many_concurrent_callers_share_few_commits(db: Database) -> None:
    async def one(n: int) -> None:
        await db.transact(lambda tx: tx.execute("INSERT INTO effects (what) VALUES (?)", (str(n),)))

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(one, n)

    assert len(_effects(db)) == 200
    assert db.commits < 200


async def test_a_shutdown_during_the_commit_keeps_what_it_committed(tmp_path: Path) -> None:
    """Leaving the Database while a COMMIT runs in its thread: the caller still gets its
    result (the commit stands), not the committer's cancellation."""
    in_commit, finish = anyio.Event(), threading.Event()
    results: list[object] = []

    async def caller(db: Database) -> None:
        results.append(await db.transact(lambda tx: tx.execute(
            "INSERT INTO effects (what) VALUES ('kept')").lastrowid))  # fmt: skip

    # The task group outlives the Database, so its caller waits across the shutdown.
    async with (
        anyio.create_task_group() as tg,
        Database(tmp_path / "t.sqlite3", "test", _metadata()) as db,
    ):
        real_commit = db._commit
        loop = anyio.lowlevel.current_token()

        def slow_commit() -> None:
            anyio.from_thread.run_sync(in_commit.set, token=loop)
            finish.wait(5)
            real_commit()

        db._commit = slow_commit  # type: ignore[method-assign]
        tg.start_soon(caller, db)
        await in_commit.wait()
        # The COMMIT ends a moment after the committer is cancelled below.
        threading.Timer(0.2, finish.set).start()
    assert results == [1]
    assert _effects(db) == ["kept"]


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_event_loop(db: Database) -> None:
    import sqlite3

    waiting = anyio.Event()
    real_begin_waiting = db._begin_waiting

    def begin_waiting() -> None:
        anyio.from_thread.run_sync(waiting.set)
        real_begin_waiting()

    db._begin_waiting = begin_waiting  # type: ignore[method-assign]
    shell = sqlite3.connect(db.path, isolation_level=None)  # an operator's shell
    shell.execute("BEGIN IMMEDIATE")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(db.transact, lambda tx: tx.execute(
                "INSERT INTO effects (what) VALUES ('after the shell')"))  # fmt: skip
            # The writer waits in a thread: this task still runs, and lets go of the lock.
            await waiting.wait()
            assert _effects(db) == []
            shell.execute("COMMIT")
    finally:
        shell.close()
    assert _effects(db) == ["after the shell"]


async def test_emitted_messages_are_in_the_outbox_only_if_the_job_commits(db: Database) -> None:
    def emit_then_fail(tx: Tx) -> None:
        tx.emit(Pinged(order_id="o1", n=1))
        raise ValueError("no")

    (outcome,) = await db.run_all([(emit_then_fail, None)])
    envelope = await db.transact(lambda tx: tx.emit(Pinged(order_id="o1", n=2)))

    assert outcome.error is not None
    rows = await db.transact(
        lambda tx: tx.execute("SELECT message_id, type FROM outbox").fetchall()
    )
    assert rows == [(envelope.message_id, "test.Pinged")]


async def test_consumer_skips_a_message_it_has_already_processed(
    db: Database, registry: MessageRegistry
) -> None:
    seen: list[int] = []
    consumer = Consumer("c", db, {Ping.TYPE: lambda tx, m: seen.append(m.n)}, registry)
    envelope = await db.transact(lambda tx: tx.emit(Ping(order_id="o1", n=7)))

    await consumer([envelope, envelope])
    await consumer([envelope])

    assert seen == [7]


def _parked(db: Database) -> list[tuple[str, str, int]]:
    import sqlite3

    with sqlite3.connect(db.path) as conn:
        return conn.execute(
            "SELECT correlation_id, status, attempts FROM dead_letter ORDER BY id"
        ).fetchall()


async def _running(consumer: Consumer, condition: Callable[[], bool]) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await wait_for(condition)
        tg.cancel_scope.cancel()


def _flaky(failures: dict[int, int], seen: list[int]) -> Callable[[Tx, Ping], None]:
    """A handler that fails ``failures[n]`` times for message ``n``, then records it."""

    def handler(tx: Tx, message: Ping) -> None:
        if failures.get(message.n, 0) > 0:
            failures[message.n] -= 1
            raise TransientError("flaky")
        seen.append(message.n)

    return handler


async def test_a_transient_failure_is_retried_with_backoff_without_blocking_other_orders(
    db: Database, registry: MessageRegistry
) -> None:
    seen: list[int] = []
    handler = _flaky({1: 2}, seen)  # message n=1 fails twice, then succeeds
    policy = RetryPolicy(attempts=5, base=0.001, cap=0.01)
    consumer = Consumer("c", db, {Ping.TYPE: handler}, registry, policy=policy)
    first = await db.transact(partial(_emit_ping, "o1", 1))
    other = await db.transact(partial(_emit_ping, "o2", 2))

    await consumer([first, other])
    assert seen == [2], "another order went on while o1 waits for its retry"

    # The handler runs before its commit: wait for the commit too.
    await _running(consumer, lambda: seen == [2, 1] and _parked(db)[0][1] == "DELIVERED")
    assert _parked(db) == [("o1", "DELIVERED", 2)]


async def test_a_later_message_of_a_parked_order_waits_behind_it(
    db: Database, registry: MessageRegistry
) -> None:
    seen: list[int] = []
    handler = _flaky({1: 1}, seen)
    policy = RetryPolicy(attempts=5, base=0.001, cap=0.01)
    consumer = Consumer("c", db, {Ping.TYPE: handler}, registry, policy=policy)
    first = await db.transact(partial(_emit_ping, "o1", 1))
    second = await db.transact(partial(_emit_ping, "o1", 2))

    await consumer([first])
    await consumer([second])
    assert seen == []

    await _running(consumer, lambda: seen == [1, 2])


async def test_a_message_that_keeps_failing_is_dead_and_can_be_replayed_once(
    db: Database, registry: MessageRegistry
) -> None:
    seen: list[int] = []
    broken = [True]

    def handler(tx: Tx, message: Ping) -> None:
        if broken[0]:
            raise TransientError("always")
        seen.append(message.n)

    policy = RetryPolicy(attempts=3, base=0.001, cap=0.01)
    consumer = Consumer("c", db, {Ping.TYPE: handler}, registry, policy=policy)
    envelope = await db.transact(partial(_emit_ping, "o1", 1))
    await consumer([envelope])
    await _running(consumer, lambda: _parked(db) == [("o1", "DEAD", 3)])

    broken[0] = False
    (row_id,) = await db.transact(lambda tx: tx.one("SELECT id FROM dead_letter"))  # type: ignore[misc]
    assert await consumer.replay(row_id) == "RETRYING"
    assert await consumer.replay(row_id) == "RETRYING"  # twice is harmless
    await _running(consumer, lambda: seen == [1])
    assert await consumer.replay(row_id) == "DELIVERED"
    assert seen == [1]


async def test_a_handler_bug_is_dead_lettered_at_once_and_others_go_on(
    db: Database, registry: MessageRegistry
) -> None:
    seen: list[int] = []

    def handler(tx: Tx, message: Ping) -> None:
        if message.n == 1:
            raise KeyError("bug")
        seen.append(message.n)

    consumer = Consumer("c", db, {Ping.TYPE: handler}, registry)
    first = await db.transact(partial(_emit_ping, "o1", 1))
    second = await db.transact(partial(_emit_ping, "o2", 2))

    await consumer([first, second])

    assert seen == [2]
    assert _parked(db) == [("o1", "DEAD", 1)]


async def test_relay_recovers_undelivered_outbox_rows_in_commit_order(
    tmp_path: Path, registry: MessageRegistry
) -> None:
    path = tmp_path / "r.sqlite3"
    async with Database(path, "test", _metadata()) as db:
        for n in range(5):
            await db.transact(partial(_emit, "o1", n))
    # A restart: nothing was published before; the new relay finds all five.
    received: list[int] = []
    transport = InMemoryTransport(registry)

    async def handler(batch: Sequence[Envelope]) -> None:
        received.extend(e.message.n for e in batch)  # type: ignore[attr-defined]

    transport.subscribe("s", [Pinged.TYPE], handler)
    async with Database(path, "test", _metadata()) as db, anyio.create_task_group() as tg:
        relay = OutboxRelay(db, transport, registry)
        assert await relay.recover() == 5
        tg.start_soon(transport.run)
        await wait_for(lambda: len(received) == 5)
        pending = "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
        await wait_for(lambda: _scalar(path, pending) == 0)
        tg.cancel_scope.cancel()
    assert received == [0, 1, 2, 3, 4]


async def test_dispatched_marks_ride_with_the_next_commit(
    tmp_path: Path, registry: MessageRegistry
) -> None:
    """A relay's "dispatched" marks wait for another commit (or the linger) instead of
    costing one each: 20 sequential emitting commits stay about 20 commits, not 40."""
    path = tmp_path / "m.sqlite3"
    transport = InMemoryTransport(registry)
    received: list[int] = []

    async def handler(batch: Sequence[Envelope]) -> None:
        received.extend(e.message.n for e in batch)  # type: ignore[attr-defined]

    transport.subscribe("s", [Pinged.TYPE], handler)
    pending = "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
    async with Database(path, "test", _metadata()) as db, anyio.create_task_group() as tg:
        OutboxRelay(db, transport, registry)
        tg.start_soon(transport.run)
        for n in range(20):
            await db.transact(partial(_emit, "o1", n))
            await wait_for(lambda n=n: len(received) == n + 1)
        # The last mark has nothing to ride with: the linger commits it.
        await wait_for(lambda: _scalar(path, pending) == 0)
        tg.cancel_scope.cancel()
    assert received == list(range(20))
    assert db.commits <= 22, db.commits


async def test_a_clean_stop_commits_what_lingers(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    async with Database(path, "test", _metadata()) as db:
        db.submit(lambda tx: tx.execute("INSERT INTO effects (what) VALUES ('late')"), linger=60)
        assert db.commits == 0
    assert _scalar(path, "SELECT count(*) FROM effects") == 1


def _scalar(path: Path, sql: str) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        value: int = conn.execute(sql).fetchone()[0]
        return value


async def test_events_fan_out_but_a_command_has_one_handler(registry: MessageRegistry) -> None:
    transport = InMemoryTransport(registry)

    async def handler(batch: Sequence[Envelope]) -> None:
        return None

    transport.subscribe("a", [Ping.TYPE, Pinged.TYPE], handler)
    transport.subscribe("b", [Pinged.TYPE], handler)
    with pytest.raises(DuplicateHandlerError):
        transport.subscribe("c", [Ping.TYPE], handler)


async def test_transport_keeps_publish_order_per_subscription(
    db: Database, registry: MessageRegistry
) -> None:
    transport = InMemoryTransport(registry)
    received: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Envelope]) -> None:
        received.extend((e.correlation_id, e.message.n) for e in batch)  # type: ignore[attr-defined]

    transport.subscribe("s", [Pinged.TYPE], handler)
    relay = OutboxRelay(db, transport, registry)
    assert relay is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.run)
        for n in range(50):
            await db.transact(partial(_emit, f"o{n % 3}", n))
        await wait_for(lambda: len(received) == 50)
        tg.cancel_scope.cancel()
    for key in ("o0", "o1", "o2"):
        ns = [n for k, n in received if k == key]
        assert ns == sorted(ns)
