"""The deterministic simulation: the real system, one seed, one exact run.

Built by ``main.build_system`` with the simulation's transport, on real SQLite
files (kept cheaply, see ``SIM_PRAGMAS``), each ``Database`` in direct mode (a
transaction runs inline, no writer thread) on a simulated clock. One coroutine,
the scheduler, then decides every move with one seeded ``random.Random``:

- which subscription gets which pending envelopes next (order heads only: one
  order's messages keep their order; orders interleave), and whether the
  acknowledgement is lost so the batch comes again (a duplicate delivery);
- when a new order is placed, when an operator aborts a saga, when a customer cancels;
- when checkout's timers and the consumers' dead-letter retries run, and when
  the clock moves (randomly, and to the next due timer when nothing else can run);
- when the outboxes' bookkeeping (the relay's queued "mark dispatched" jobs) commits;
- which handlers fail (a transient error: the message is parked and retried);
- crashes: of a module between steps, or inside a commit (before the COMMIT,
  after it but before the publish, after the publish). A crash drops the
  module's in-memory parts (relay, consumers, queued jobs), closes and reopens
  its database and runs start-up recovery; what was not acknowledged is
  delivered again. With the in-process bus's semantics a crash takes the whole
  process (every module, every queue); with Kafka's, one module.

Then the faults stop and the system drains; the run fails if any invariant of
``bench.invariants.audit`` breaks, or a saga is not terminal (liveness), or a
saga's timeline shows a message handled twice.

Nothing on these paths reads the real clock or an unseeded random source: ids
come from a seeded ``uuid4`` and retry jitter from a seeded ``random`` while
the run lasts, so ``run_simulation(config)`` twice gives the same result.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any

import anyio

from bench.invariants import Files, audit
from bus.chaos import ChaosPlan
from bus.consumer import Consumer
from bus.faults import CrashPoints
from bus.messages import Envelope
from bus.relay import OutboxRelay
from bus.sqlite import Database, Tx
from checkout.contract import AbortSaga
from main import Settings, System, build_system
from modules.inventory.handlers import upsert_product
from modules.order.domain import NewOrder, OrderNotFoundError
from modules.order.handlers import cancel_by_customer, place_order
from modules.payment.handlers import upsert_account
from tests.sim.system import TimerJob, retry_job, timer_jobs
from tests.sim.transport import SimTransport, Subscription

__all__ = ["SimConfig", "SimCrash", "SimResult", "Simulation", "empty_databases", "run_simulation"]

EPOCH = 1_800_000_000.0  # the simulated clock's start (2027)
PRODUCTS = {"mug": (1_200, 12), "tea": (500, 25), "lamp": (2_500, 4), "rare": (9_900, 1)}
CUSTOMERS = {"ada": 40_000, "bob": 6_000, "cyd": 15_000, "dan": 2_000}
COUNTRIES = ("DE", "DE", "FR", "NL", "US", "AQ")  # AQ is not served
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115"}
TERMINAL = ("COMPLETED", "COMPENSATED")
DRAIN_STEPS_PER_ORDER = 400  # a drain that takes longer is not making progress


class SimCrash(BaseException):
    """A simulated SIGKILL of ``module``: raised through whatever it was doing."""

    def __init__(self, module: str, where: str) -> None:
        super().__init__(f"{module} crashed {where}")
        self.module = module


@dataclass(frozen=True)
class SimConfig:
    """One run: the seed decides everything else."""

    seed: int
    saga: str = "orchestration"
    orders: int = 50
    mutations: frozenset[str] = frozenset()
    crashes: int = 3  # at most this many crashes per run
    faults: bool = True  # crashes and lost acknowledgements (off: interleavings only)

    def command(self) -> str:
        """The one-line command that repeats this run."""
        parts = [f"./dev sim --seed {self.seed} --saga {self.saga} --orders {self.orders}"]
        if self.mutations:
            parts.append(f"--mutations {','.join(sorted(self.mutations))}")
        if not self.faults:
            parts.append("--no-faults")
        return " ".join(parts)


@dataclass
class SimResult:
    seed: int
    saga: str
    orders: int
    transport: str
    steps: int = 0
    crashes: int = 0
    aborts: int = 0
    cancels: int = 0
    delivered: int = 0
    redelivered: int = 0
    virtual_seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    digest: str = ""  # of every module's business tables: equal runs, equal digests
    command: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# How the simulation's files are kept. A simulated crash is a process crash: the
# connection is closed (its open transaction, if any, rolled back, as SQLite does
# for a process that dies) and the file reopened; the machine never loses power
# and no other connection ever reads while a run goes on. So the files need
# neither a WAL (readers beside a writer; survival of an OS crash) nor any sync:
# the rollback journal in memory still undoes a failed job's savepoint and an
# abandoned transaction, and what was committed is in the file when it is reopened.
# One connection holds the file's lock for good (no locking per transaction).
SIM_PRAGMAS = ("PRAGMA locking_mode=EXCLUSIVE",)


def _simulated_file(db: Database) -> None:
    """Open ``db`` as production does (its pragmas, its checks), then as the simulation
    keeps its files: no sync, the journal in memory, the lock held."""
    db.direct = True
    db.synchronous = "OFF"
    db.journal_mode = "MEMORY"
    open_file = db._open

    def _open() -> None:
        open_file()
        assert db._conn is not None
        for pragma in SIM_PRAGMAS:
            db._conn.execute(pragma)

    db._open = _open  # type: ignore[method-assign]


class _CommitCrashes(CrashPoints):
    """Crash points the scheduler may fire inside a commit of one database."""

    def __init__(self, sim: Simulation, module: str) -> None:
        super().__init__("", 0)
        self.sim = sim
        self.module = module

    def reached(self, *names: str) -> None:
        where = names[0].partition(":")[0] if names else "?"
        self.sim.maybe_crash(self.module, where)


@contextmanager
def _seeded_ids_and_jitter(rng: random.Random) -> Iterator[None]:
    """Seeded ``uuid.uuid4`` (message, shipment ids) and global ``random`` (retry jitter)."""
    real_uuid4 = uuid.uuid4
    state = random.getstate()
    random.seed(rng.getrandbits(64))
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    try:
        yield
    finally:
        uuid.uuid4 = real_uuid4
        random.setstate(state)


class Simulation:
    """One seeded run of the whole system (see the module doc)."""

    def __init__(self, config: SimConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.rng = random.Random(config.seed)
        self.now = EPOCH
        self.faults = config.faults
        durable = self.rng.random() < 0.5
        self.transport = SimTransport(durable=durable)
        self.result = SimResult(
            config.seed, config.saga, config.orders, "kafka-like" if durable else "in-process",
            command=config.command(),
        )  # fmt: skip
        # Fault rates, drawn per run so that runs differ in character too.
        self.p_redeliver = self.rng.choice((0.0, 0.02, 0.1))
        self.p_commit_crash = self.rng.choice((0.0, 0.002, 0.01))
        self.max_batch = self.rng.choice((1, 3, 8))
        # Handler failures (transient: parked, retried with backoff on the simulated clock).
        p_fail = self.rng.choice((0.0, 0.02, 0.05))
        self.chaos = ChaosPlan({"*": {"exception": p_fail}}, seed=config.seed) if p_fail else None
        # No metrics: nothing reads them here.
        settings = Settings(data_dir=data_dir, saga=config.saga, metrics=False)
        self.system: System = build_system(settings, transport=self.transport)
        self.dbs: dict[str, Database] = {}
        for module in self.system.modules:
            db = module.db
            _simulated_file(db)
            db.clock = self.clock
            db.crash_points = _CommitCrashes(self, module.name)
            self.dbs[module.name] = db
        self.relays: dict[str, OutboxRelay] = {}
        for relay in self.system.relays:
            relay.db.commit_hooks.remove(relay.publish)
            self.relays[relay.db.name] = self.make_relay(relay.db)
        self.consumers: dict[str, Consumer] = {}
        for consumer in self.system.consumers:
            self._replace_consumer(consumer)
        self.timers: list[TimerJob] = timer_jobs(self.system)
        # Envelopes the transport acknowledged, by database: (seq, its commits then).
        self.unmarked: dict[str, list[tuple[int, int]]] = {name: [] for name in self.dbs}
        self.transport.on_ack = self._acknowledged
        self.violations: list[str] = []
        self.files = Files(data_dir)
        # The scheduler's menus of moves, by the state that opens them (see ``step``).
        self._menus: dict[
            tuple[bool, bool, bool, bool], tuple[list[Callable[[], Awaitable[Any]]], list[float]]
        ] = {}
        self._picked: Subscription | None = None  # the busy subscription a delivery would serve
        self.placed: list[str] = []
        self.crash_budget = config.crashes if config.faults else 0
        self.max_drain_steps = 2_000 + DRAIN_STEPS_PER_ORDER * config.orders

    # -- what mutations override (tests/sim/mutations.py) ---------------------------

    def make_relay(self, db: Database) -> OutboxRelay:
        return OutboxRelay(db, self.transport, self.system.registry)

    def make_consumer(self, old: Consumer) -> Consumer:
        return Consumer(
            old.name, old.db, old.routes, old.registry, observer=old.observer,
            observes=old.observes, witness=old.witness, dedupe=old.dedupe, policy=old.policy,
            chaos=self.chaos if self.faults else None,
        )  # fmt: skip

    # -- the clock and crashes ------------------------------------------------------------

    def clock(self) -> float:
        # Strictly increasing, so that the order of commits shows in their timestamps.
        self.now += 1e-6
        return self.now

    def maybe_crash(self, module: str, where: str) -> None:
        """Called inside commits: crash there, sometimes."""
        if self.crash_budget > 0 and self.rng.random() < self.p_commit_crash:
            self.crash_budget -= 1
            raise SimCrash(module, where)

    def _replace_consumer(self, old: Consumer) -> None:
        consumer = self.make_consumer(old)
        self.consumers[consumer.name] = consumer
        self.transport.subscriptions[consumer.name].handler = consumer

    async def _crash(self, module: str) -> None:
        """Drop the module's (or, in process, every module's) memory; reopen; recover."""
        self.result.crashes += 1
        names = [module] if self.transport.durable else list(self.dbs)
        while True:
            for name in names:
                db = self.dbs[name]
                await db.__aexit__(None, None, None)  # closes, forgets queued jobs
                self.unmarked[name] = []
                db.commit_hooks.remove(self.relays[name].publish)
                self.relays[name] = self.make_relay(db)
                for consumer in list(self.consumers.values()):
                    if consumer.db is db:
                        self._replace_consumer(consumer)
            if not self.transport.durable:
                self.transport.lose_everything()
            try:
                for name in names:
                    await self.dbs[name].__aenter__()
                for name in names:
                    await self.relays[name].recover()
                    for consumer in self.consumers.values():
                        if consumer.db is self.dbs[name]:
                            await consumer.db.transact(consumer._load_blocked)
                return
            except SimCrash as again:  # crashed during its own recovery
                self.result.crashes += 1
                names = [again.module] if self.transport.durable else list(self.dbs)

    def _acknowledged(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            db = self.dbs[envelope.source]
            self.unmarked[envelope.source].append((envelope.seq, db.commits))

    def check_marks(self) -> None:
        """The relay's contract: what the transport acknowledged is marked dispatched by
        the next commit of its database (the one after the commit under way, if any)."""
        for name, pending in self.unmarked.items():
            # Acknowledged in the order of their database's commits: the first is due first.
            if not pending or self.dbs[name].commits < pending[0][1] + 2:
                continue
            db = self.dbs[name]
            due = [seq for seq, commits in pending if db.commits >= commits + 2]
            if not due:
                continue
            self.unmarked[name] = [(s, c) for s, c in pending if db.commits < c + 2]
            marks = ",".join("?" * len(due))
            sql = f"SELECT seq FROM outbox WHERE dispatched_at IS NULL AND seq IN ({marks})"
            # Through the writer's connection, which holds the file's lock (between
            # steps no transaction is open on it: this reads what was committed).
            assert db._conn is not None
            for (seq,) in db._conn.execute(sql, due).fetchall():
                self.violations.append(
                    f"{name}: outbox row {seq} acknowledged by the transport is still"
                    " undispatched two commits later"
                )

    async def _guarded(self, action: Awaitable[Any]) -> None:
        try:
            await action
        except SimCrash as crash:
            await self._crash(crash.module)

    # -- the moves ------------------------------------------------------------------------

    async def _place(self) -> None:
        n = len(self.placed)
        rng = self.rng
        skus = rng.sample(sorted(PRODUCTS), rng.randint(1, 2))
        order = NewOrder(
            order_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            customer_id=rng.choice(sorted(CUSTOMERS)),
            items=tuple((sku, rng.randint(1, 3)) for sku in skus),
            address={**ADDRESS, "country": rng.choice(COUNTRIES)},
            idempotency_key=f"sim-{n}",
            fingerprint=f"sim-{n}",
        )
        try:
            await self.dbs["order"].transact(lambda tx: place_order(tx, order))
        finally:
            # Placed or not, it counts (a crash loses the request, as a client's
            # would be cut off; its saga may still run if the commit made it).
            self.placed.append(order.order_id)

    async def _abort(self) -> None:
        order_id = self.rng.choice(self.placed[-5:])  # most likely one still running

        def abort(tx: Tx) -> None:
            tx.emit(AbortSaga(order_id=order_id, reason="aborted by operator"))

        self.result.aborts += 1
        await self.dbs["checkout"].transact(abort)

    async def _cancel(self) -> None:
        """A customer cancels an order (it races the saga at the order's row)."""
        order_id = self.rng.choice(self.placed[-5:])

        def cancel(tx: Tx) -> None:
            with suppress(OrderNotFoundError):  # its placing was cut off by a crash
                cancel_by_customer(tx, order_id, "cancelled by customer")

        self.result.cancels += 1
        await self.dbs["order"].transact(cancel)

    async def _deliver(self, sub: Subscription, redeliver: float) -> None:
        await self.transport.deliver(sub, self.rng, max_batch=self.max_batch, redeliver=redeliver)

    async def _timers(self) -> float | None:
        """One pass of every timer and retry; when the next one is due."""
        due: list[float] = []
        checkout = self.dbs.get("checkout")
        for job in self.timers:
            assert checkout is not None
            next_due = await checkout.transact(job)
            if next_due is not None:
                due.append(next_due)
        for consumer in self.consumers.values():
            if not consumer._blocked:
                continue  # nothing parked
            next_due = await consumer.db.transact(retry_job(consumer))
            if next_due is not None:
                due.append(next_due)
        return min(due) if due else None

    async def _flush(self) -> None:
        queued = [db for db in self.dbs.values() if db._queue]
        if queued:
            self.rng.choice(queued).run_queued()

    def _crash_between_steps(self) -> SimCrash:
        self.crash_budget -= 1
        return SimCrash(self.rng.choice(sorted(self.dbs)), "between steps")

    async def step(self) -> None:
        """One scheduler decision while faults may happen."""
        rng = self.rng
        busy = self.transport.busy()
        if busy:
            self._picked = rng.choice(busy)
        key = (
            len(self.placed) < self.config.orders,
            bool(busy),
            bool(self.placed),
            self.crash_budget > 0 and self.faults,
        )
        menu = self._menus.get(key) or self._menu(*key)
        (move,) = rng.choices(menu[0], cum_weights=menu[1])
        self.result.steps += 1
        await self._guarded(move())
        self.check_marks()

    def _menu(
        self, placing: bool, busy: bool, placed: bool, crashing: bool
    ) -> tuple[list[Callable[[], Awaitable[Any]]], list[float]]:
        """The moves open in this state and their cumulative weights (``random.choices``
        accumulates the same weights the same way: the same draw picks the same move)."""
        moves: list[tuple[float, Callable[[], Awaitable[Any]]]] = []
        if placing:
            moves.append((1.0, self._place))
        if busy:
            moves.append((6.0, self._deliver_picked))
        moves.append((0.3, self._timers))
        moves.append((0.4, self._flush))
        moves.append((0.3, self._advance))
        if placed:
            moves.append((0.03, self._abort))
            moves.append((0.03, self._cancel))
        if crashing:
            moves.append((0.01, self._raise_crash))
        menu = [move for _, move in moves], list(accumulate(weight for weight, _ in moves))
        self._menus[placing, busy, placed, crashing] = menu
        return menu

    async def _deliver_picked(self) -> None:
        assert self._picked is not None
        await self._deliver(self._picked, self.p_redeliver if self.faults else 0)

    async def _advance(self) -> None:
        self.now += self.rng.expovariate(1 / 2.0)

    async def _raise_crash(self) -> None:
        raise self._crash_between_steps()

    async def drain(self) -> bool:
        """No more faults: run until nothing is left to do; False if that never happens."""
        for _ in range(self.max_drain_steps):
            self.check_marks()
            self.result.steps += 1
            busy = self.transport.busy()
            queued = [db for db in self.dbs.values() if db._queue]
            if queued and (not busy or self.rng.random() < 0.5):
                self.rng.choice(queued).run_queued()
                continue
            if busy:
                await self._guarded(self._deliver(self.rng.choice(busy), 0.0))
                continue
            due = await self._timers()
            if self.transport.busy() or any(db._queue for db in self.dbs.values()):
                continue
            if due is None:
                return True
            self.now = max(self.now, due)
        return False

    # -- the run ----------------------------------------------------------------------------

    async def _seed(self) -> None:
        for sku, (price, stock) in PRODUCTS.items():
            product = partial(
                upsert_product, sku=sku, name=sku.title(), price_cents=price, stock=stock
            )
            await self.dbs["inventory"].transact(product)
        for customer, balance in CUSTOMERS.items():
            account = partial(
                upsert_account, customer_id=customer, name=customer.title(), balance_cents=balance
            )
            await self.dbs["payment"].transact(account)

    async def run(self) -> SimResult:
        with _seeded_ids_and_jitter(self.rng):
            for db in self.dbs.values():
                await db.__aenter__()
            try:
                budget, self.crash_budget = self.crash_budget, 0
                await self._seed()
                await self.drain()
                self.crash_budget = budget
                while len(self.placed) < self.config.orders:
                    await self.step()
                for _ in range(self.rng.randint(0, 20 * self.config.orders)):
                    await self.step()  # faults keep coming while the sagas finish
                self.faults, self.crash_budget = False, 0
                for consumer in self.consumers.values():
                    consumer.chaos = None
                drained = await self.drain()
            finally:
                for db in self.dbs.values():
                    await db.__aexit__(None, None, None)
        self.result.virtual_seconds = round(self.now - EPOCH, 3)
        self.result.delivered = self.transport.delivered
        self.result.redelivered = self.transport.redelivered
        with closing(self.files):  # the auditor's read-only connections
            self.result.violations = self.check(drained)
            self.result.digest = self.digest()
        return self.result

    def digest(self) -> str:
        """A hash of what the run left in every module's tables (ids included)."""
        tables = {
            "order": "SELECT order_id, status, reason, total_cents, updated_at FROM orders",
            "payment": "SELECT order_id, kind, amount_cents, at FROM ledger",
            "inventory": "SELECT order_id, status FROM reservations",
            "shipping": "SELECT order_id, status, shipment_id FROM shipments",
            "checkout": "SELECT saga_id, status, step, updated_at FROM tracked_sagas",
        }
        hasher = hashlib.sha256()
        for db, sql in tables.items():
            hasher.update(repr(sorted(self._query(db, sql), key=repr)).encode())
        return hasher.hexdigest()[:16]

    def check(self, drained: bool) -> list[str]:
        stock = {sku: n for sku, (_, n) in PRODUCTS.items()}
        bad = list(self.violations[:20])
        bad += (
            [] if drained else [f"not quiescent after {self.max_drain_steps} steps without faults"]
        )
        bad += audit(self.files, initial_stock=stock, initial_balance=CUSTOMERS)
        orders = dict(self._query("order", "SELECT order_id, status FROM orders"))
        self.result.outcomes = dict(
            sorted(self._query("order", "SELECT status, count(*) FROM orders GROUP BY status"))
        )
        ended = {"COMPLETED": "COMPLETED", "CANCELLED": "COMPENSATED"}
        tracked = dict(self._query("checkout", "SELECT saga_id, status FROM tracked_sagas"))
        for order_id, status in orders.items():
            if tracked.get(order_id) != ended.get(status):
                bad.append(f"order {order_id} is {status} but its saga is {tracked.get(order_id)}")
        if self.config.saga == "orchestration":
            for saga_id, status in self._query("checkout", "SELECT saga_id, status FROM sagas"):
                if status not in TERMINAL:
                    bad.append(f"saga {saga_id} is still {status}")
        bad += self._compensation_order()
        for saga_id, cause, type_name, count in self._query(
            "checkout",
            "SELECT saga_id, causation_id, type, count(*) FROM timeline WHERE causation_id"
            " IS NOT NULL GROUP BY saga_id, causation_id, type HAVING count(*) > 1",
        ):
            bad.append(f"saga {saga_id}: {count} {type_name} caused by one message {cause}")
        return bad

    def _compensation_order(self) -> list[str]:
        """A cancelled order's undos ran last step first: shipment, stock, payment, order.
        (Tombstones are left out: a late abort may void a step that never ran at any time.)"""
        undone = {
            "shipping": "SELECT order_id, updated_at FROM shipments WHERE status = 'CANCELLED'",
            "inventory": "SELECT order_id, updated_at FROM reservations WHERE status = 'RELEASED'",
            "payment": "SELECT order_id, updated_at FROM payments WHERE status = 'REFUNDED'",
            "order": "SELECT order_id, updated_at FROM orders WHERE status = 'CANCELLED'",
        }
        times = {db: dict(self._query(db, sql)) for db, sql in undone.items()}
        bad = []
        for order_id in times["order"]:
            when = [(db, at[order_id]) for db, at in times.items() if order_id in at]
            ran = [db for db, _ in sorted(when, key=lambda item: item[1])]
            if ran != [db for db, _ in when]:
                bad.append(f"order {order_id} was compensated in the order {ran}")
        return bad

    def _query(self, db: str, sql: str) -> Sequence[tuple[Any, ...]]:
        return self.files.all(db, sql)


_templates: dict[Path, Path] = {}


def empty_databases(root: Path) -> Path:
    """Empty module databases (the schema only), made once per root and copied per run:
    creating the schema costs more than a whole simulated run of fifty sagas."""
    template = _templates.get(root)
    if template is None:
        template = root / "schema"
        if template.exists():
            shutil.rmtree(template)
        system = build_system(Settings(data_dir=template), transport=SimTransport(durable=True))

        async def create() -> None:
            for module in system.modules:
                module.db.direct = True
                await module.db.__aenter__()
                await module.db.__aexit__(None, None, None)

        anyio.run(create)
        for path in template.glob("*.sqlite3"):
            # Out of WAL once here, so that no run's first open has to leave it.
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA journal_mode=DELETE")
        _templates[root] = template
    return template


def run_simulation(
    config: SimConfig,
    data_dir: Path,
    *,
    simulation: type[Simulation] = Simulation,
    template: Path | None = None,
) -> SimResult:
    """Run one seed in a fresh ``data_dir`` (synchronously, on its own event loop).

    It starts from the empty databases in ``template``, by default made once in
    ``data_dir``'s parent (see ``empty_databases``).
    """
    template = template or empty_databases(data_dir.parent)
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in template.glob("*.sqlite3"):
        shutil.copyfile(path, data_dir / path.name)
    sim = simulation(config, data_dir)
    return anyio.run(sim.run)
