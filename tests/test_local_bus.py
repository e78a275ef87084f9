"""What the local bus adds to the transport contract (tests/test_bus_contract.py): a commit
in one process wakes the readers in another at once, without the slow poll; one process
at a time runs a subscription; positions survive a restart."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import pytest

from bus.local import (
    LocalTransport,
    SourceMismatchError,
    SubscriptionTakenError,
    database_file,
)
from bus.messages import Envelope
from bus.relay import OutboxRelay
from bus.sqlite import Database, Tx
from main import MODULES, build_system, parse_args
from tests.support import wait_for
from tests.test_bus_contract import REGISTRY, Charged, _metadata

pytestmark = pytest.mark.anyio

NEVER = 3600.0  # a poll interval no test waits for


def _transport(tmp_path: Path, *, poll_interval: float = NEVER) -> LocalTransport:
    sources = {"ledger": tmp_path / "n.sqlite3"}
    return LocalTransport(REGISTRY, sources, tmp_path / "bus", poll_interval=poll_interval)


async def test_a_commit_in_one_process_wakes_a_reader_in_another_without_polling(
    tmp_path: Path,
) -> None:
    writer, reader = _transport(tmp_path), _transport(tmp_path)
    received: list[str] = []

    async def handle(batch: Sequence[Envelope]) -> None:
        received.extend(e.message_id for e in batch)

    reader.subscribe("audit", [Charged.TYPE], handle)
    async with (
        Database(tmp_path / "n.sqlite3", "ledger", _metadata()) as db,
        anyio.create_task_group() as tg,
    ):
        OutboxRelay(db, writer, REGISTRY)
        tg.start_soon(writer.run)
        tg.start_soon(reader.run)
        # The writer knows the reader (started after it: told by the reader's hello).
        await wait_for(lambda: len(writer.peers) == 1, deadline=10)
        for n in range(3):

            def emit(tx: Tx, n: int = n) -> str:
                return tx.emit(Charged(order_id=f"o{n}", n=n)).message_id

            message_id = await db.transact(emit)
            # Wakes within the deadline only through the writer's datagram: no poll runs.
            await wait_for(lambda m=message_id: m in received, deadline=5)
        tg.cancel_scope.cancel()


async def test_a_reader_reads_on_past_a_full_batch_and_what_commits_while_it_handles_one(
    tmp_path: Path,
) -> None:
    """No poll runs: a read that filled its batch reads again at once, and a read that
    saw the whole log waits for the wakeup of a commit made meanwhile (never missing it)."""
    transport = LocalTransport(
        REGISTRY, {"ledger": tmp_path / "n.sqlite3"}, tmp_path / "bus",
        poll_interval=NEVER, max_batch=3,
    )  # fmt: skip
    handled: list[int] = []
    db = Database(tmp_path / "n.sqlite3", "ledger", _metadata())

    def emit(first: int, count: int) -> Callable[[Tx], None]:
        def fn(tx: Tx) -> None:
            for n in range(first, first + count):
                tx.emit(Charged(order_id=f"o{n}", n=n))

        return fn

    async def handle(batch: Sequence[Envelope]) -> None:
        numbers = [e.message.n for e in batch if isinstance(e.message, Charged)]
        if numbers[0] == 6:  # while the last batch, [6, 7], is handled, one more commits
            await db.transact(emit(8, 1))
        handled.extend(numbers)

    async with db:
        await db.transact(emit(0, 8))  # before the reader starts: three batches of <= 3
        OutboxRelay(db, transport, REGISTRY)
        transport.subscribe("audit", [Charged.TYPE], handle)
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.run)
            await wait_for(lambda: len(handled) >= 9, deadline=10)
            await db.transact(emit(9, 1))  # a commit after it has read everything
            await wait_for(lambda: len(handled) >= 10, deadline=10)
            tg.cancel_scope.cancel()
    assert handled == list(range(10))


async def test_one_process_at_a_time_runs_a_subscription(tmp_path: Path) -> None:
    first, second = _transport(tmp_path), _transport(tmp_path)

    async def handle(batch: Sequence[Envelope]) -> None:
        pass

    first.subscribe("payment", [Charged.TYPE], handle)
    second.subscribe("payment", [Charged.TYPE], handle)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await wait_for(
            lambda: (tmp_path / "bus" / "positions" / "payment.lock").exists(), deadline=10
        )
        await anyio.sleep(0.05)
        with pytest.raises(SubscriptionTakenError, match="payment"):
            await second.run()
        tg.cancel_scope.cancel()
    # The first one is gone: the standby takes over.
    with anyio.move_on_after(0.2) as scope:
        await second.run()
    assert scope.cancelled_caught


async def test_positions_are_saved_on_a_clean_stop_and_read_at_start(tmp_path: Path) -> None:
    handled: list[int] = []

    async def handle(batch: Sequence[Envelope]) -> None:
        handled.extend(e.message.n for e in batch if isinstance(e.message, Charged))

    async with Database(tmp_path / "n.sqlite3", "ledger", _metadata()) as db:

        def emit(tx: Tx) -> None:
            for n in range(4):
                tx.emit(Charged(order_id=f"o{n}", n=n))

        await db.transact(emit)
        for _ in range(2):  # a restart reads on from where the last run stopped
            transport = _transport(tmp_path, poll_interval=0.05)
            transport.subscribe("audit", [Charged.TYPE], handle)
            async with anyio.create_task_group() as tg:
                tg.start_soon(transport.run)
                await wait_for(lambda: len(handled) >= 4, deadline=10)
                await anyio.sleep(0.2)  # a few polls more: nothing new
                tg.cancel_scope.cancel()
    assert handled == [0, 1, 2, 3]
    saved = json.loads((tmp_path / "bus" / "positions" / "audit.json").read_text())
    assert saved == {"ledger": 4}


async def test_the_lag_counts_the_rows_a_subscription_has_still_to_pass(tmp_path: Path) -> None:
    gate = anyio.Event()

    async def handle(batch: Sequence[Envelope]) -> None:
        await gate.wait()

    async with Database(tmp_path / "n.sqlite3", "ledger", _metadata()) as db:

        def emit(tx: Tx) -> None:
            for n in range(4):
                tx.emit(Charged(order_id=f"o{n}", n=n))

        await db.transact(emit)
        transport = _transport(tmp_path, poll_interval=0.05)
        transport.subscribe("audit", [Charged.TYPE], handle)
        assert transport.lag() == {}  # not running: no positions yet
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.run)
            await wait_for(lambda: transport.lag() == {("audit", "ledger"): 4}, deadline=10)
            gate.set()
            await wait_for(lambda: transport.lag() == {("audit", "ledger"): 0}, deadline=10)
            tg.cancel_scope.cancel()


def test_a_module_whose_database_is_elsewhere_is_refused(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    transport.check("ledger", tmp_path / "n.sqlite3")  # the file its readers read
    with pytest.raises(SourceMismatchError, match="ledger"):
        transport.check("ledger", tmp_path / "other.sqlite3")
    with pytest.raises(SourceMismatchError, match="fraud"):
        transport.check("fraud", tmp_path / "fraud.sqlite3")  # not a source at all


def test_every_module_of_the_app_keeps_its_database_where_the_local_bus_reads_it(
    tmp_path: Path,
) -> None:
    settings = parse_args(["--data-dir", str(tmp_path), "--bus", "local"])
    system = build_system(settings)
    assert {m.name: m.db.path for m in system.modules} == {
        name: database_file(tmp_path, name) for name in MODULES
    }
