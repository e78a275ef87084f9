"""Retention: the bus tables and finished sagas' history stay bounded as time passes,
while anything still needed (dedup ids within the window, sagas in flight) stays."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from bench.invariants import audit
from bus.relay import OutboxRelay
from bus.retention import DAY, Retention, parse_duration
from bus.sqlite import Tx
from main import Settings, System, create_app, parse_args
from tests.support import (
    admin_client,
    final_order,
    order_body,
    place,
    query,
    quiescent,
    seed,
    wait_for,
)

pytestmark = pytest.mark.anyio
T = TypeVar("T")

PRODUCTS = {"mug": (1200, 100), "tea": (500, 3)}
CUSTOMERS = {"ada": 100_000, "bob": 1_000}
BUS_DBS = ("order", "payment", "inventory", "shipping", "checkout")


class Clock:
    """The wall clock, plus days the test skips ahead (every module database reads it)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


def app_on(clock: Clock, settings: Settings) -> tuple[Litestar, System]:
    """The app with every module database on ``clock``."""
    app = create_app(settings)
    system: System = app.state.system
    for module in system.modules:
        module.db.clock = clock
    return app, system


def count(data_dir: Path, db: str, table: str, where: str = "1") -> int:
    return int(query(data_dir, db, f"SELECT count(*) FROM {table} WHERE {where}")[0][0])


async def on_app(client: AsyncTestClient[Any], fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn`` on the app's event loop (the test client runs the app in a thread of its own)."""
    return await anyio.to_thread.run_sync(client.blocking_portal.call, fn, *args)


async def _prune_all(system: System) -> dict[str, dict[str, int]]:
    return {task.db.name: await task.prune_once() for task in system.retention}


async def prune_all(client: AsyncTestClient[Any], system: System) -> dict[str, dict[str, int]]:
    return await on_app(client, _prune_all, system)


async def add_saga_in_flight(system: System, saga_id: str, at: float) -> None:
    """A saga still running (parked for weeks, say), whose rows are as old as ``at``."""
    checkout = system.checkout
    assert checkout is not None
    db = checkout.db

    def insert(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO tracked_sagas (saga_id, status, step, last_type, attempt, deadline,"
            " definition_version, started_at, updated_at)"
            " VALUES (?, 'PARKED', 'payment', 'checkout.SagaParked', 1, NULL, 1, ?, ?)",
            (saga_id, at, at),
        )
        tx.execute(
            "INSERT INTO timeline (message_id, saga_id, type, version, kind, source,"
            " compensation, occurred_at, payload) VALUES (?, ?, 'checkout.SagaParked', 1,"
            " 'event', 'checkout', 0, ?, x'7b7d')",
            (f"m-{saga_id}", saga_id, at),
        )
        tx.execute(
            "INSERT INTO sagas (saga_id, status, step, state, deadline, expires_at, version,"
            " definition_version, created_at, updated_at)"
            " VALUES (?, 'PARKED', 'payment', x'', 1e18, 1e18, 1, 1, ?, ?)",
            (saga_id, at, at),
        )

    await db.transact(insert)


async def test_old_bus_rows_and_finished_sagas_are_pruned_recent_and_in_flight_ones_stay(
    data_dir: Path, saga_mode: str
) -> None:
    clock = Clock()
    app, system = app_on(
        clock, Settings(data_dir=data_dir, saga=saga_mode, retention_interval=3600.0)
    )
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        bodies = [
            order_body("ada", {"mug": 1}),  # completes
            order_body("bob", {"mug": 1}),  # payment fails
            order_body("ada", {"tea": 5}),  # stock fails: refund, cancel
        ]
        orders = [await place(client, body) for body in bodies]
        for oid in orders:
            await final_order(client, oid)
        await wait_for(lambda: quiescent(data_dir))
        await on_app(client, add_saga_in_flight, system, "parked-saga", time.time() - DAY)
        outbox = {name: count(data_dir, name, "outbox") for name in BUS_DBS}
        inbox = {name: count(data_dir, name, "inbox") for name in BUS_DBS}
        finished = count(data_dir, "checkout", "timeline", "saga_id != 'parked-saga'")
        assert sum(outbox.values())
        assert sum(inbox.values())
        assert finished

        # Within the dedup window: nothing goes.
        clock.skipped = 6 * DAY
        assert all(not any(n.values()) for n in (await prune_all(client, system)).values())
        assert {name: count(data_dir, name, "outbox") for name in BUS_DBS} == outbox

        # One more day: every dispatched outbox row and every inbox id goes; the
        # finished sagas' history (kept 30 days) and the saga in flight stay.
        clock.skipped = 7 * DAY + 60
        pruned = await prune_all(client, system)
        assert {name: count(data_dir, name, "outbox") for name in BUS_DBS} == dict.fromkeys(
            BUS_DBS, 0
        )
        assert {name: count(data_dir, name, "inbox") for name in BUS_DBS} == dict.fromkeys(
            BUS_DBS, 0
        )
        assert sum(p["outbox"] for p in pruned.values()) == sum(outbox.values())
        assert count(data_dir, "checkout", "timeline", "saga_id != 'parked-saga'") == finished

        # Past the keep period: finished sagas go, the one in flight stays, however old.
        clock.skipped = 30 * DAY + 60
        await prune_all(client, system)
        assert query(data_dir, "checkout", "SELECT saga_id, status FROM tracked_sagas") == [
            ("parked-saga", "PARKED")
        ]
        assert query(data_dir, "checkout", "SELECT saga_id FROM timeline") == [("parked-saga",)]
        assert query(data_dir, "checkout", "SELECT saga_id FROM sagas") == [("parked-saga",)]
        # The orders themselves are the business's records, not history to prune.
        assert count(data_dir, "order", "orders") == len(orders)
        # Each pruning part ran as a supervised background task.
        health = (await client.get("/health")).json()["parts"]
        assert {f"retention:{name}" for name in BUS_DBS} <= set(health)


async def test_a_message_redelivered_within_the_window_is_still_deduplicated(
    data_dir: Path, saga_mode: str
) -> None:
    clock = Clock()
    app, system = app_on(
        clock, Settings(data_dir=data_dir, saga=saga_mode, retention_interval=3600.0)
    )
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        orders = [await place(client, order_body("ada", {"mug": 1})) for _ in range(3)]
        for oid in orders:
            await final_order(client, oid)
        await wait_for(lambda: quiescent(data_dir))
        charges = count(data_dir, "payment", "ledger", "kind = 'CHARGE'")

        # Six days on, after a retention sweep, every module's whole outbox is
        # delivered again (as a relay does after a crash): nothing happens twice.
        clock.skipped = 6 * DAY
        await prune_all(client, system)
        redelivered = [await on_app(client, redeliver_all, relay) for relay in system.relays]
        assert sum(redelivered) > len(orders) * 4
        await wait_for(lambda: quiescent(data_dir))

    assert count(data_dir, "payment", "ledger", "kind = 'CHARGE'") == charges == len(orders)
    initial_stock = {sku: stock for sku, (_, stock) in PRODUCTS.items()}
    assert audit(data_dir, initial_stock=initial_stock, initial_balance=CUSTOMERS) == []


async def test_pruning_goes_in_batches_of_the_configured_size(data_dir: Path) -> None:
    clock = Clock()
    app, system = app_on(
        clock, Settings(data_dir=data_dir, retention_batch=7, retention_interval=3600.0)
    )
    async with admin_client(app) as client:
        await seed(client, PRODUCTS, CUSTOMERS)
        for _ in range(4):
            await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        await wait_for(lambda: quiescent(data_dir))
        order_db = next(t for t in system.retention if t.db.name == "order")
        outbox = count(data_dir, "order", "outbox")
        assert outbox > 7
        commits = order_db.db.commits
        clock.skipped = 8 * DAY
        pruned = await on_app(client, order_db.prune_once)
        assert pruned["outbox"] == outbox
        assert count(data_dir, "order", "outbox") == 0
        # One transaction per batch of 7 (at least), never one for everything.
        assert order_db.db.commits - commits >= outbox // 7


async def redeliver_all(relay: OutboxRelay) -> int:
    await relay.db.transact(lambda tx: tx.execute("UPDATE outbox SET dispatched_at = NULL"))
    return await relay.recover()


def test_retention_settings_are_durations_and_must_agree() -> None:
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90") == 90
    with pytest.raises(ValueError, match="duration"):
        parse_duration("a week")
    with pytest.raises(ValueError, match="at least as long"):
        Retention(dedup_window=7 * DAY, keep_finished=DAY)
    defaults = parse_args([])
    assert parse_duration(defaults.dedup_window) == 7 * DAY
    assert parse_duration(defaults.kafka_retention) < parse_duration(defaults.dedup_window)
    with pytest.raises(SystemExit):
        parse_args(["--bus", "kafka", "--kafka-retention", "8d"])
    with pytest.raises(SystemExit):
        parse_args(["--dedup-window", "soon"])


def test_the_pruning_queries_use_their_indexes(data_dir: Path) -> None:
    """The hot path pays for small indexes; the pruning queries must then use them."""
    import sqlite3

    from bus.sqlite import Database
    from checkout.db import CheckoutBase

    db = Database(data_dir / "c.sqlite3", "checkout", CheckoutBase.metadata)
    db._open()
    conn = sqlite3.connect(data_dir / "c.sqlite3")
    plans = {
        name: " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        for name, sql, params in [
            ("outbox", "SELECT seq FROM outbox WHERE dispatched_at IS NOT NULL"
             " AND dispatched_at < ? ORDER BY dispatched_at LIMIT ?", (1.0, 5)),
            ("inbox", "SELECT consumer, message_id FROM inbox WHERE processed_at < ?"
             " ORDER BY processed_at LIMIT ?", (1.0, 5)),
            ("tracked", "SELECT saga_id FROM tracked_sagas INDEXED BY tracked_sagas_finished"
             " WHERE status IN"
             " ('COMPLETED', 'COMPENSATED') AND updated_at < ? ORDER BY updated_at LIMIT ?",
             (1.0, 5)),
            ("sagas", "SELECT saga_id FROM sagas INDEXED BY sagas_finished"
             " WHERE status IN ('COMPLETED', 'COMPENSATED')"
             " AND updated_at < ? ORDER BY updated_at LIMIT ?", (1.0, 5)),
        ]
    }  # fmt: skip
    conn.close()
    db._close()
    assert "outbox_dispatched" in plans["outbox"]
    assert "inbox_processed_at" in plans["inbox"]
    assert "tracked_sagas_finished" in plans["tracked"]
    assert "sagas_finished" in plans["sagas"]
    assert all("SCAN" not in plan or "USING" in plan for plan in plans.values()), plans
