"""Chaos run: many orders at a steady rate while the app is SIGKILLed again and again.

    python -m bench.chaos                                  # 10,000 orders, 20 kills, orchestration
    python -m bench.chaos --saga both                      # both saga modes, one after the other
    python -m bench.chaos --orders 300 --kills 3 --rate 100 --seed 7   # a quick one

It runs ``main.py`` as a subprocess with bus chaos on (duplicated, delayed,
failing and hanging deliveries) and short step timeouts, seeds a catalog with
scarce stock and customers with limited balances over HTTP, then places orders
at a steady rate, each with its own Idempotency-Key, some to a country that is
not served. While it places, it SIGKILLs the app at seeded random moments and
restarts it on the same data dir; a POST cut off by a kill (no answer, or no
connection) is sent again after the restart with the same key, until it gets a
202 (or a 4xx). Then it waits until every accepted order is COMPLETED or
CANCELLED and the bus is idle, stops the app cleanly and audits every database
(``bench.invariants.audit`` plus the checks in ``check``).

stdout: one JSON line per saga mode. Progress goes to stderr. The exit status is
non-zero if any run found a violation (which includes an accepted order that
never ended). A failed run keeps its data dir and the app's log (``app.log`` in
it) and names it in the JSON line.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.environment import ROOT, admin_headers, free_port, git_state, machine
from bench.invariants import audit
from bench.orders import order_body

MODES = ("orchestration", "choreography")
DB_NAMES = ("order", "payment", "inventory", "shipping", "checkout")
TERMINAL = frozenset({"COMPLETED", "CANCELLED"})
DEFAULT_CHAOS = "duplicate=0.02,delay=0.02,delay_s=0.05,exception=0.02,hang=0.005,hang_s=0.2"
DEFAULT_TIMEOUTS = "step=2,attempts=4,saga=120"
SERVED = ("DE", "FR", "NL", "AT", "US")
UNSERVED = "AQ"  # not in the default shipping countries
UNSERVED_FRACTION = 0.05

# Scarce skus run out during the run; "plenty" never does, so orders keep
# completing until the end; "rare" runs out almost at once.
SCARCE = {"mug": 1_200, "tea": 500, "lamp": 4_900, "pen": 300, "book": 2_500}
PLENTY = ("plenty", 700)
RARE = ("rare", 9_900, 2)

_CHILDREN: set[subprocess.Popen[bytes]] = set()


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@atexit.register
def _kill_children() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def query(data_dir: Path, db: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Read one module's database, read-only (the app may be running)."""
    path = data_dir / f"{db}.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


def backlog(data_dir: Path) -> dict[str, int]:
    """What keeps the bus busy: pending orders, undispatched outbox rows, parked messages."""
    ((pending,),) = query(data_dir, "order", "SELECT count(*) FROM orders WHERE status='PENDING'")
    outbox = parked = 0
    for name in DB_NAMES:
        outbox += query(data_dir, name, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")[
            0
        ][0]
        parked += query(
            data_dir, name, "SELECT count(*) FROM dead_letter WHERE status = 'RETRYING'"
        )[0][0]
    return {"pending": pending, "outbox": outbox, "parked": parked}


def quiescent(data_dir: Path) -> bool:
    """No order pending, every outbox delivered, no parked message waiting (as
    ``tests.support.quiescent``)."""
    return not any(backlog(data_dir).values())


# -- configuration and workload --------------------------------------------------


@dataclass(frozen=True)
class Config:
    orders: int = 10_000
    rate: float = 150.0
    kills: int = 20
    saga: str = "orchestration"
    seed: int = 1
    chaos: str = DEFAULT_CHAOS
    timeouts: str = DEFAULT_TIMEOUTS
    retry: str = ""
    concurrency: int = 64
    data_dir: Path | None = None
    drain_timeout: float = 600.0
    health_timeout: float = 120.0
    post_timeout: float = 30.0
    keep: bool = False


@dataclass
class Workload:
    """The catalog, the customers and every order to place, by Idempotency-Key."""

    products: dict[str, tuple[int, int]]  # sku -> (price_cents, stock)
    customers: dict[str, int]  # customer -> balance_cents
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def initial_stock(self) -> dict[str, int]:
        return {sku: stock for sku, (_, stock) in self.products.items()}

    def items(self, key: str) -> Counter[str]:
        return Counter({i["sku"]: i["quantity"] for i in self.bodies[key]["items"]})

    def total(self, key: str) -> int:
        return sum(self.products[sku][0] * qty for sku, qty in self.items(key).items())

    @classmethod
    def build(cls, n: int, seed: int, mode: str) -> Workload:
        """Scarce stock (a fifth of the demand for most skus) and limited money (a quarter
        of the customers can hardly pay for anything, a quarter runs dry during the run)."""
        rng = random.Random(f"workload:{seed}")
        demand = max(1, n * 2 * 2 // (len(SCARCE) + 1))  # about 2 lines of 2 units per order
        products = {sku: (price, max(3, demand // 5)) for sku, price in SCARCE.items()}
        products[PLENTY[0]] = (PLENTY[1], 10 * demand)
        products[RARE[0]] = (RARE[1], RARE[2])
        n_customers = max(8, n // 50)
        spend = (n / n_customers) * 8_000  # what one customer's orders would cost
        customers: dict[str, int] = {}
        for i in range(n_customers):
            tier = i % 4
            if tier == 0:
                balance = rng.randrange(0, 3_000)
            elif tier == 1:
                balance = int(spend * rng.uniform(0.1, 0.4))
            else:
                balance = 10**9
            customers[f"cust-{i:04d}"] = balance
        workload = cls(products, customers)
        skus = [*SCARCE, PLENTY[0], PLENTY[0]]
        for index in range(n):
            lines = rng.choice((1, 1, 2, 2, 3))
            chosen = rng.sample(skus, lines)
            if rng.random() < 0.02:
                chosen.append(RARE[0])
            items = {sku: rng.randint(1, 3) for sku in dict.fromkeys(chosen)}
            country = UNSERVED if rng.random() < UNSERVED_FRACTION else rng.choice(SERVED)
            workload.bodies[f"chaos-{seed}-{mode[:5]}-{index:06d}"] = order_body(
                rng.choice(list(customers)), items, country=country
            )
        return workload


# -- the app as a subprocess -----------------------------------------------------


class AppDiedError(Exception):
    """The app could not be (re)started."""


class App:
    """``main.py`` over one data dir, run after run; each run on a fresh port."""

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "app.log"
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.runs = 0
        self.up = False
        self._up_event = anyio.Event()
        self.lock = anyio.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self) -> None:
        assert not self.alive(), "the app is still running"
        self.port = free_port()
        self.runs += 1
        config = self.config
        command = [
            sys.executable, "main.py", "--data-dir", str(self.data_dir),
            "--port", str(self.port), "--saga", config.saga, "--log-level", "WARNING",
            "--timeouts", config.timeouts,
        ]  # fmt: skip
        if config.chaos:
            chaos_seed = config.seed * 1000 + self.runs
            command += ["--chaos", config.chaos, "--chaos-seed", str(chaos_seed)]
        if config.retry:
            command += ["--retry", config.retry]
        with self.log_path.open("ab") as out:
            out.write(f"\n=== run {self.runs}: {' '.join(command[1:])}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _CHILDREN.add(self.proc)

    async def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.config.health_timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return True
                await anyio.sleep(0.05)
        return False

    async def start(self) -> None:
        """Start a run and wait for /health; a few tries (a port can be taken meanwhile)."""
        for _ in range(3):
            self._start()
            if await self._wait_healthy():
                self.up = True
                self._up_event.set()
                return
            self.kill()
            log(f"run {self.runs} did not become healthy:\n{self.tail(30)}")
        raise AppDiedError(f"the app did not start (3 tries); see {self.log_path}")

    def mark_down(self) -> None:
        self.up = False
        if self._up_event.is_set():
            self._up_event = anyio.Event()

    async def wait_up(self) -> None:
        while not self.up:
            await self._up_event.wait()

    def kill(self) -> int | None:
        """SIGKILL the running process (if any) and reap it."""
        self.mark_down()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        _CHILDREN.discard(self.proc)
        return code

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; True if the app shut down cleanly (SIGKILL after ``timeout``)."""
        self.mark_down()
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        _CHILDREN.discard(self.proc)
        # uvicorn re-raises SIGTERM once it has shut down (its log says so at INFO only).
        return code == -signal.SIGTERM

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- placing orders while killing the app ----------------------------------------


@dataclass
class Placing:
    accepted: dict[str, str] = field(default_factory=dict)  # key -> order id, from the 202
    rejected: dict[str, str] = field(default_factory=dict)  # key -> "status: body" of a 4xx
    abandoned: list[str] = field(default_factory=list)
    posts: int = 0
    retried: int = 0  # POSTs sent again with the same key
    retried_keys: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)  # why a POST was sent again
    server_errors: list[str] = field(default_factory=list)
    started: int = 0  # orders started so far (the kills' clock)
    kills: int = 0
    kill_points: list[int] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    _progress: anyio.Event = field(default_factory=anyio.Event)

    def step(self) -> None:
        self.started += 1
        self._progress.set()
        self._progress = anyio.Event()

    async def reach(self, started: int) -> None:
        while self.started < started:
            await self._progress.wait()


async def post_order(
    client: httpx.AsyncClient, app: App, key: str, body: dict[str, Any], st: Placing, until: float
) -> None:
    """POST one order until it gets a 202 or a 4xx, always with the same key."""
    while True:
        with anyio.move_on_after(max(0.0, until - time.monotonic())):
            await app.wait_up()
        if time.monotonic() > until:
            st.abandoned.append(key)
            return
        st.posts += 1
        try:
            response = await client.post(
                f"{app.url}/orders", json=body, headers={"Idempotency-Key": key}
            )
        except httpx.TransportError as exc:  # cut off by a kill, refused while down, timed out
            st.errors[type(exc).__name__] += 1
        else:
            if response.status_code == 202:
                order_id = response.json()["order_id"]
                previous = st.accepted.setdefault(key, order_id)
                assert previous == order_id
                return
            if 400 <= response.status_code < 500:
                st.rejected[key] = f"{response.status_code}: {response.text[:300]}"
                return
            st.errors[f"HTTP {response.status_code}"] += 1
            st.server_errors.append(f"{key}: {response.status_code} {response.text[:300]}")
        st.retried += 1
        st.retried_keys.add(key)
        await anyio.sleep(0.05)


async def place_all(
    app: App, workload: Workload, config: Config, st: Placing, until: float
) -> None:
    """Start orders at ``config.rate`` per second, at most ``config.concurrency`` in flight;
    pause while the app is down (and do not burst afterwards)."""
    interval = 1.0 / config.rate
    slots = anyio.Semaphore(config.concurrency)
    limits = httpx.Limits(
        max_connections=config.concurrency + 8, max_keepalive_connections=config.concurrency
    )
    timeout = httpx.Timeout(config.post_timeout, connect=5.0)

    async def one(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
        try:
            await post_order(client, app, key, body, st, until)
        finally:
            slots.release()

    async with (
        httpx.AsyncClient(limits=limits, timeout=timeout) as client,
        anyio.create_task_group() as tg,
    ):
        next_at = time.monotonic()
        for key, body in workload.bodies.items():
            await app.wait_up()
            now = time.monotonic()
            if next_at > now:
                await anyio.sleep(next_at - now)
            elif now - next_at > 1.0:
                next_at = now  # behind after a restart or a full window: no burst
            next_at += interval
            await slots.acquire()
            st.step()
            tg.start_soon(one, client, key, body)
            if st.started % 1000 == 0:
                log(
                    f"{st.started} orders started, {len(st.accepted)} accepted,"
                    f" {st.retried} POSTs retried, {st.kills} kills"
                )


async def restart(app: App, st: Placing, *, kill: bool) -> None:
    async with app.lock:
        if kill:
            code = app.kill()
            st.kills += 1
            log(f"kill {st.kills} (run {app.runs} ended with {code}) at order {st.started}")
        else:
            app.mark_down()
        await app.start()


async def kill_at(app: App, config: Config, st: Placing, rng: random.Random) -> None:
    """SIGKILL the app when the placing reaches each of ``st.kill_points``, a moment later."""
    for point in st.kill_points:
        await st.reach(point)
        await anyio.sleep(rng.uniform(0.0, 0.3))
        await restart(app, st, kill=True)


async def watch(app: App, st: Placing) -> None:
    """Restart the app if it dies without being killed (and remember that it did)."""
    while True:
        await anyio.sleep(0.1)
        if app.up and not app.alive() and not app.lock.locked():
            code = app.proc.returncode if app.proc is not None else None
            st.unexpected_exits.append(f"run {app.runs} exited by itself with {code}")
            log(f"the app exited by itself with {code}:\n{app.tail(40)}")
            await restart(app, st, kill=False)


# -- draining --------------------------------------------------------------------


async def drain(app: App, st: Placing, until: float) -> list[str]:
    """Wait until every accepted order is terminal and the bus is idle; return the ids
    of accepted orders still not terminal at ``until`` (empty on success)."""
    wanted = set(st.accepted.values())
    last_log = 0.0
    async with httpx.AsyncClient(timeout=30.0) as client:

        async def long_poll(order_id: str) -> None:
            with contextlib.suppress(httpx.TransportError):
                await client.get(f"{app.url}/orders/{order_id}", params={"wait": 10})

        while True:
            status = dict(query(app.data_dir, "order", "SELECT order_id, status FROM orders"))
            pending = sorted(oid for oid in wanted if status.get(oid) not in TERMINAL)
            now = time.monotonic()
            if not pending and quiescent(app.data_dir):
                return []
            if now > until:
                return pending
            if now - last_log > 5:
                last_log = now
                left = backlog(app.data_dir)
                log(f"draining: {len(pending)} accepted orders not terminal, {left}")
            if not pending:
                await anyio.sleep(0.2)
                continue
            await app.wait_up()
            with anyio.move_on_after(max(0.1, until - now)):
                async with anyio.create_task_group() as tg:
                    for order_id in pending[:100]:
                        tg.start_soon(long_poll, order_id)


# -- the checks ------------------------------------------------------------------


def _orders_and_keys(
    data_dir: Path, workload: Workload, st: Placing, bad: list[str]
) -> dict[str, tuple[str, str | None, str, int]]:
    """Every 202 is one stored, terminal order, and no key has two; returns each accepted
    key's (status, reason, customer, total)."""
    rows = query(
        data_dir,
        "order",
        "SELECT idempotency_key, order_id, status, reason, customer_id, total_cents FROM orders",
    )
    keys = Counter(row[0] for row in rows)
    bad += [f"key {key} has {n} orders" for key, n in keys.items() if n > 1]
    if len(rows) != len(st.accepted):
        bad.append(f"{len(rows)} orders stored for {len(st.accepted)} accepted keys")
    by_key = {row[0]: row[1:] for row in rows}
    bad += [f"order {row[1]} for key {row[0]} was never answered 202" for row in rows
            if row[0] not in st.accepted]  # fmt: skip
    items: dict[str, Counter[str]] = {}
    for oid, sku, qty in query(
        data_dir, "order", "SELECT order_id, sku, quantity FROM order_items"
    ):
        items.setdefault(oid, Counter())[sku] += qty
    outcome: dict[str, tuple[str, str | None, str, int]] = {}
    for key, order_id in st.accepted.items():
        if key not in by_key:
            bad.append(f"accepted order {order_id} (key {key}) is not stored")
            continue
        stored_id, status, reason, customer, total = by_key[key]
        if stored_id != order_id:
            bad.append(f"key {key} answered {order_id} but stored {stored_id}")
        if status not in TERMINAL:
            bad.append(f"accepted order {order_id} (key {key}) is still {status}")
        if customer != workload.bodies[key]["customer_id"] or total != workload.total(key):
            bad.append(f"order {order_id} stored as {customer}/{total}, placed otherwise")
        if items.get(stored_id) != workload.items(key):
            bad.append(f"order {order_id} has items {items.get(stored_id)}")
        outcome[key] = (status, reason, customer, total)
    return outcome


def _money(
    data_dir: Path, workload: Workload, st: Placing, outcome: dict[str, Any], bad: list[str]
) -> None:
    """One charge per order at most; per customer, charges - refunds = completed orders
    = how much the balance went down."""
    customer_of = {st.accepted[key]: o[2] for key, o in outcome.items()}
    entries: Counter[tuple[str, str]] = Counter()
    net: Counter[str] = Counter()
    for oid, customer, kind, amount in query(
        data_dir, "payment", "SELECT order_id, customer_id, kind, amount_cents FROM ledger"
    ):
        entries[oid, kind] += 1
        net[customer] += amount if kind == "CHARGE" else -amount
        if customer_of.get(oid) != customer:
            bad.append(f"ledger {kind} of order {oid} for {customer}, not its customer")
    bad += [f"order {oid} has {n} {kind} entries" for (oid, kind), n in entries.items() if n > 1]
    spent: Counter[str] = Counter()
    for _key, (status, _, customer, total) in outcome.items():
        if status == "COMPLETED":
            spent[customer] += total
    if +net != +spent:
        differ = sorted(c for c in set(net) | set(spent) if net[c] != spent[c])
        bad += [f"customer {c}: charges - refunds {net[c]} != completed {spent[c]}" for c in differ]
    balances = dict(query(data_dir, "payment", "SELECT customer_id, balance_cents FROM accounts"))
    for customer, start in workload.customers.items():
        if start - balances.get(customer, 0) != spent[customer]:
            bad.append(
                f"customer {customer}: balance went from {start} to {balances.get(customer)},"
                f" completed orders cost {spent[customer]}"
            )


def _stock_and_shipments(
    data_dir: Path, workload: Workload, st: Placing, outcome: dict[str, Any], bad: list[str]
) -> None:
    sold: Counter[str] = Counter()
    completed: set[str] = set()
    for key, (status, *_) in outcome.items():
        if status == "COMPLETED":
            sold.update(workload.items(key))
            completed.add(st.accepted[key])
    stock = dict(query(data_dir, "inventory", "SELECT sku, stock FROM products"))
    for sku, start in workload.initial_stock.items():
        if start - stock.get(sku, 0) != sold[sku]:
            bad.append(f"sku {sku}: stock went from {start} to {stock.get(sku)}, sold {sold[sku]}")
    shipments: Counter[str] = Counter()
    for oid, status in query(data_dir, "shipping", "SELECT order_id, status FROM shipments"):
        if status == "SCHEDULED":
            shipments[oid] += 1
            if oid not in completed:
                bad.append(f"order {oid} has a scheduled shipment but is not completed")
    bad += [f"completed order {oid} has {shipments[oid]} scheduled shipments"
            for oid in completed if shipments[oid] != 1]  # fmt: skip


def _bus(data_dir: Path, bad: list[str]) -> dict[str, int]:
    """No undispatched outbox row, no parked or dead message; the dead ones are listed."""
    retried = 0
    for name in DB_NAMES:
        ((undispatched,),) = query(
            data_dir, name, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
        )
        if undispatched:
            bad.append(f"{name}: {undispatched} outbox rows never dispatched")
        for consumer, status, type_, oid, error, attempts in query(
            data_dir,
            name,
            "SELECT consumer, status, type, correlation_id, error, attempts FROM dead_letter"
            " WHERE status IN ('DEAD', 'RETRYING') ORDER BY id",
        ):
            bad.append(f"{status} letter in {consumer}: {type_} of {oid} after {attempts}"
                       f" attempts: {error}")  # fmt: skip
        ((delivered,),) = query(
            data_dir, name, "SELECT count(*) FROM dead_letter WHERE status = 'DELIVERED'"
        )
        retried += delivered
    return {"parked_then_delivered": retried}


def _sagas(data_dir: Path, mode: str, st: Placing, outcome: dict[str, Any], bad: list[str]) -> None:
    """Checkout agrees: each saga ended as its order did, and no message was handled twice."""
    ended = {
        st.accepted[key]: "COMPLETED" if o[0] == "COMPLETED" else "COMPENSATED"
        for key, o in outcome.items()
    }
    tables = ["tracked_sagas"] + (["sagas"] if mode == "orchestration" else [])
    for table in tables:
        sagas = dict(query(data_dir, "checkout", f"SELECT saga_id, status FROM {table}"))
        wrong = [f"saga {oid} is {sagas.get(oid)} in {table}, its order {end}"
                 for oid, end in ended.items() if sagas.get(oid) != end]  # fmt: skip
        bad += wrong[:20] + ([f"... {len(wrong) - 20} more in {table}"] if len(wrong) > 20 else [])
    repeated = query(
        data_dir,
        "checkout",
        "SELECT saga_id, causation_id, type, count(*) FROM timeline"
        " WHERE causation_id IS NOT NULL GROUP BY saga_id, causation_id, type HAVING count(*) > 1",
    )
    bad += [f"saga {s}: {n} {t} caused by one message {c}" for s, c, t, n in repeated]


def check(
    data_dir: Path, workload: Workload, st: Placing, mode: str
) -> tuple[list[str], dict[str, Any]]:
    """Every violation found in the stopped app's databases, and the outcome counts."""
    bad = audit(data_dir, initial_stock=workload.initial_stock, initial_balance=workload.customers)
    outcome = _orders_and_keys(data_dir, workload, st, bad)
    _money(data_dir, workload, st, outcome, bad)
    _stock_and_shipments(data_dir, workload, st, outcome, bad)
    extra = _bus(data_dir, bad)
    _sagas(data_dir, mode, st, outcome, bad)
    bad += [f"POST {key} refused: {why}" for key, why in st.rejected.items()]
    bad += [f"POST {key} never accepted" for key in st.abandoned]
    bad += [f"POST answered {e}" for e in st.server_errors]
    bad += [f"the app died: {e}" for e in st.unexpected_exits]
    statuses = Counter(o[0] for o in outcome.values())
    reasons = Counter(o[1] for o in outcome.values() if o[0] == "CANCELLED")
    return bad, {
        "completed": statuses["COMPLETED"],
        "cancelled": statuses["CANCELLED"],
        "cancel_reasons": dict(reasons.most_common()),
        **extra,
    }


# -- one run ---------------------------------------------------------------------


async def seed_catalog(app: App, workload: Workload) -> None:
    async with httpx.AsyncClient(base_url=app.url, headers=admin_headers(), timeout=30.0) as client:
        for sku, (price, stock) in workload.products.items():
            response = await client.put(
                f"/products/{sku}", json={"name": sku.title(), "price_cents": price, "stock": stock}
            )
            response.raise_for_status()
        for customer, balance in workload.customers.items():
            response = await client.put(
                f"/customers/{customer}", json={"name": customer, "balance_cents": balance}
            )
            response.raise_for_status()
    # The order module prices orders from its own copy of the catalog: let it arrive.
    deadline = time.monotonic() + 60
    while not quiescent(app.data_dir):
        if time.monotonic() > deadline:
            raise AppDiedError(f"the catalog was not delivered in 60 s: {backlog(app.data_dir)}")
        await anyio.sleep(0.05)


def prepare(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.glob("*.sqlite3")):
        raise SystemExit(f"{data_dir} already holds a data dir: give an empty one")


async def run_mode(config: Config, data_dir: Path) -> dict[str, Any]:
    """One chaos run in ``config.saga`` mode over a fresh ``data_dir``; the JSON line's dict."""
    started = time.monotonic()
    admin_headers()  # before the app starts: it inherits the token from the environment
    prepare(data_dir)
    git = git_state()
    workload = Workload.build(config.orders, config.seed, config.saga)
    rng = random.Random(f"kills:{config.seed}")
    st = Placing()
    n_kills = min(config.kills, max(0, config.orders - 1))
    st.kill_points = sorted(rng.sample(range(1, config.orders), n_kills))
    app = App(data_dir, config)
    log(f"{config.saga}: {config.orders} orders at {config.rate}/s, {n_kills} kills, {data_dir}")
    result: dict[str, Any] = {"mode": config.saga}
    clean_stop = False
    not_terminal: list[str] = []
    place_s = drain_s = 0.0
    try:
        await app.start()
        await seed_catalog(app, workload)
        log(f"seeded {len(workload.products)} products, {len(workload.customers)} customers")
        place_started = time.monotonic()
        budget = config.orders / config.rate * 3 + n_kills * 30 + 120
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, app, st)
            async with anyio.create_task_group() as placing:
                # Every kill point is below the number of orders: both end.
                placing.start_soon(kill_at, app, config, st, rng)
                await place_all(app, workload, config, st, place_started + budget)
            place_s = time.monotonic() - place_started
            log(
                f"placed: {len(st.accepted)} accepted in {place_s:.1f} s, {st.retried} POSTs"
                f" retried, {st.kills} kills; draining"
            )
            drain_started = time.monotonic()
            not_terminal = await drain(app, st, drain_started + config.drain_timeout)
            drain_s = time.monotonic() - drain_started
            tg.cancel_scope.cancel()
        log(f"drained in {drain_s:.1f} s ({len(not_terminal)} not terminal); stopping")
        async with app.lock:
            clean_stop = app.stop()
    finally:
        app.kill()
    violations, outcome = check(data_dir, workload, st, config.saga)
    if not clean_stop:
        violations.append(f"the app did not shut down cleanly on SIGTERM (see {app.log_path})")
        log(f"unclean stop; the log ends with:\n{app.tail(20)}")
    result.update(
        orders_target=config.orders,
        orders_placed=len(st.accepted),
        posts=st.posts,
        posts_retried=st.retried,
        orders_retried=len(st.retried_keys),
        retry_causes=dict(st.errors.most_common()),
        kills=st.kills,
        app_runs=app.runs,
        violations=len(violations),
        violation_samples=violations[:5],
        not_terminal=len(not_terminal),
        **outcome,
        place_s=round(place_s, 1),
        place_rate=round(len(st.accepted) / place_s, 1) if place_s else None,
        time_to_drain_s=round(drain_s, 1),
        wall_s=round(time.monotonic() - started, 1),
        seed=config.seed,
        rate=config.rate,
        chaos=config.chaos,
        timeouts=config.timeouts,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        **git,
    )
    for line in violations[:50]:
        log(f"VIOLATION {line}")
    return result


@contextlib.contextmanager
def data_root(config: Config) -> Iterator[tuple[Path, bool]]:
    """The directory the runs use, and whether it is a temporary one."""
    if config.data_dir is not None:
        yield config.data_dir, False
        return
    yield Path(tempfile.mkdtemp(prefix="saga-chaos-")), True


async def run(config: Config) -> list[dict[str, Any]]:
    """Run each requested mode (``saga`` may be ``both``); one result dict per mode."""
    modes = MODES if config.saga == "both" else (config.saga,)
    results = []
    with data_root(config) as (root, temporary):
        for mode in modes:
            data_dir = root / mode if len(modes) > 1 else root
            mode_config = dataclasses.replace(config, saga=mode)
            try:
                result = await run_mode(mode_config, data_dir)
            except AppDiedError as exc:
                result = {"mode": mode, "violations": 1, "violation_samples": [str(exc)]}
            failed = result["violations"] > 0 or result.get("not_terminal", 0) > 0
            if failed or config.keep or not temporary:
                result["data_dir"] = str(data_dir)
            results.append(result)
            print(json.dumps(result), flush=True)
        if temporary and not any("data_dir" in r for r in results):
            shutil.rmtree(root, ignore_errors=True)
    return results


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=Config.orders)
    parser.add_argument("--rate", type=float, default=Config.rate, help="orders started per s")
    parser.add_argument("--kills", type=int, default=Config.kills, help="SIGKILLs while placing")
    parser.add_argument("--saga", choices=[*MODES, "both"], default=Config.saga)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument(
        "--chaos", default=Config.chaos, help="main.py --chaos spec; '' turns bus chaos off"
    )
    parser.add_argument("--timeouts", default=Config.timeouts, help="main.py --timeouts spec")
    parser.add_argument("--retry", default=Config.retry, help="main.py --retry spec")
    parser.add_argument(
        "--concurrency", type=int, default=Config.concurrency, help="POSTs in flight at most"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="an empty dir (default: a fresh temp dir)"
    )
    parser.add_argument("--drain-timeout", type=float, default=Config.drain_timeout)
    parser.add_argument("--keep", action="store_true", help="keep the data dir of a clean run")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.rate <= 0 or args.kills < 0 or args.concurrency < 1:
        parser.error("--orders, --rate and --concurrency must be positive, --kills >= 0")
    return Config(**vars(args))


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the finally blocks and atexit kill the app.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = anyio.run(run, config)
    failed = any(r["violations"] > 0 or r.get("not_terminal", 0) > 0 for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
