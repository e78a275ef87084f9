"""An offline auditor: reads every module's SQLite file and lists broken invariants.

It stands outside the modules on purpose (as an operator's audit would): the
application never reads another module's tables, this checker reads them all,
read-only. Used by the tests, the benchmark and the chaos run.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MODULES", "Files", "audit", "counts", "reading", "unrecorded"]

MODULES = ("order", "payment", "inventory", "shipping", "checkout")


class Files:
    """Read-only connections to the module files in ``data_dir``, each opened once
    (an audit reads about thirty queries; opening a file costs more than most of them)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._conns: dict[str, sqlite3.Connection] = {}

    def exists(self, name: str) -> bool:
        return (self.data_dir / f"{name}.sqlite3").exists()

    def all(self, name: str, sql: str) -> list[tuple[Any, ...]]:
        conn = self._conns.get(name)
        if conn is None:
            path = self.data_dir / f"{name}.sqlite3"
            conn = self._conns[name] = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return conn.execute(sql).fetchall()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


@contextmanager
def reading(data_dir: Path) -> Iterator[Files]:
    """``Files`` over ``data_dir``, closed on the way out."""
    with closing(Files(data_dir)) as files:
        yield files


def _all(data_dir: Path, name: str, sql: str) -> list[tuple[Any, ...]]:
    with reading(data_dir) as files:
        return files.all(name, sql)


def counts(data_dir: Path) -> dict[str, int]:
    """Orders by status."""
    return dict(_all(data_dir, "order", "SELECT status, count(*) FROM orders GROUP BY status"))


def unrecorded(
    data_dir: Path, orders: Collection[str] | None = None, *, files: Files | None = None
) -> list[tuple[str, str, str]]:
    """Saga messages in the modules' outboxes that are not (yet) in their saga's timeline,
    as (module, type, order id); ``orders`` (default: every order) are the sagas looked at.

    Meant before retention prunes anything (as the tests and the chaos run audit): a
    finished saga's timeline and its outbox rows are pruned at about the same age (the
    keep period is at least the dedup window), but the last rows' dispatched marks can
    come a moment after the tracker saw the saga end, so they may outlive its timeline.
    """
    if files is None:
        with reading(data_dir) as files:
            return unrecorded(data_dir, orders, files=files)
    if not files.exists("checkout"):
        return []
    if orders is None:
        orders = {oid for (oid,) in files.all("order", "SELECT order_id FROM orders")}
    recorded = {m for (m,) in files.all("checkout", "SELECT message_id FROM timeline")}
    return [
        (name, type_name, key)
        for name in MODULES
        if files.exists(name)
        for message_id, type_name, key in files.all(
            name, "SELECT message_id, type, correlation_id FROM outbox"
        )
        if key in orders and message_id not in recorded
    ]


def audit(
    data_dir: Path | Files,
    *,
    initial_stock: Mapping[str, int] | None = None,
    initial_balance: Mapping[str, int] | None = None,
    require_terminal: bool = True,
) -> list[str]:
    """Every violation found, as readable lines; empty when all invariants hold.

    ``data_dir`` may be ``Files`` already open on it (the caller reads more there)."""
    if isinstance(data_dir, Files):
        return _audit(data_dir, initial_stock, initial_balance, require_terminal=require_terminal)
    with reading(data_dir) as files:
        return _audit(files, initial_stock, initial_balance, require_terminal=require_terminal)


def _audit(
    files: Files,
    initial_stock: Mapping[str, int] | None,
    initial_balance: Mapping[str, int] | None,
    *,
    require_terminal: bool,
) -> list[str]:
    bad: list[str] = []
    orders = {
        oid: (status, customer, total)
        for oid, status, customer, total in files.all(
            "order", "SELECT order_id, status, customer_id, total_cents FROM orders"
        )
    }
    items: dict[str, Counter[str]] = defaultdict(Counter)
    for oid, sku, qty in files.all("order", "SELECT order_id, sku, quantity FROM order_items"):
        items[oid][sku] += qty
    if require_terminal:
        bad += [f"order {oid} is still {s[0]}" for oid, s in orders.items() if s[0] == "PENDING"]

    # Money: at most one charge and one refund per order, refunds match charges.
    ledger: dict[str, dict[str, int]] = defaultdict(dict)
    for oid, customer, kind, amount in files.all(
        "payment", "SELECT order_id, customer_id, kind, amount_cents FROM ledger"
    ):
        if kind in ledger[oid]:
            bad.append(f"order {oid} has two {kind} entries")
        ledger[oid][kind] = amount
        if oid not in orders:
            bad.append(f"ledger entry for unknown order {oid}")
        elif orders[oid][1] != customer:
            bad.append(f"order {oid} charged to the wrong customer {customer}")
    net_by_customer: Counter[str] = Counter()
    for oid, moves in ledger.items():
        charge, refund = moves.get("CHARGE", 0), moves.get("REFUND")
        if refund is not None and refund != charge:
            bad.append(f"order {oid} refunded {refund} of a charge of {charge}")
        if oid in orders:
            net_by_customer[orders[oid][1]] += charge - (refund or 0)
    completed_by_customer: Counter[str] = Counter()
    for oid, (status, customer, total) in orders.items():
        moves = ledger.get(oid, {})
        if status == "COMPLETED":
            completed_by_customer[customer] += total
            if moves.get("CHARGE") != total or "REFUND" in moves:
                bad.append(
                    f"completed order {oid} has ledger {moves}, expected one charge of {total}"
                )
        elif status == "CANCELLED" and moves.get("CHARGE", 0) != (moves.get("REFUND") or 0):
            bad.append(f"cancelled order {oid} kept money: {moves}")
    for customer in set(net_by_customer) | set(completed_by_customer):
        if net_by_customer[customer] != completed_by_customer[customer]:
            bad.append(
                f"customer {customer}: charges - refunds = {net_by_customer[customer]},"
                f" completed orders = {completed_by_customer[customer]}"
            )
    balances = dict(files.all("payment", "SELECT customer_id, balance_cents FROM accounts"))
    for customer, start in (initial_balance or {}).items():
        if start - balances.get(customer, 0) != net_by_customer[customer]:
            bad.append(
                f"customer {customer}: balance moved {start - balances.get(customer, 0)},"
                f" ledger says {net_by_customer[customer]}"
            )

    # Stock: held units are exactly the completed orders' quantities.
    held: Counter[str] = Counter()
    reservations = dict(files.all("inventory", "SELECT order_id, status FROM reservations"))
    for _oid, sku, qty in files.all(
        "inventory",
        "SELECT l.order_id, l.sku, l.quantity FROM reservation_lines l"
        " JOIN reservations r USING (order_id) WHERE r.status = 'RESERVED'",
    ):
        held[sku] += qty
    sold: Counter[str] = Counter()
    for oid, (status, _, _) in orders.items():
        if status == "COMPLETED":
            sold.update(items[oid])
            if reservations.get(oid) != "RESERVED":
                bad.append(f"completed order {oid} has reservation {reservations.get(oid)}")
        elif status == "CANCELLED" and reservations.get(oid) == "RESERVED":
            bad.append(f"cancelled order {oid} still holds stock")
    if require_terminal and +held != +sold:
        bad.append(f"held stock {dict(held)} != completed quantities {dict(sold)}")
    stock = dict(files.all("inventory", "SELECT sku, stock FROM products"))
    bad += [f"sku {sku} has negative stock {n}" for sku, n in stock.items() if n < 0]
    for sku, start in (initial_stock or {}).items():
        if start - stock.get(sku, 0) != held[sku]:
            bad.append(f"sku {sku}: stock moved {start - stock.get(sku, 0)}, held {held[sku]}")

    # Shipping: exactly one scheduled shipment per completed order, none otherwise.
    shipments = dict(files.all("shipping", "SELECT order_id, status FROM shipments"))
    for oid, (status, _, _) in orders.items():
        scheduled = shipments.get(oid) == "SCHEDULED"
        if status == "COMPLETED" and not scheduled:
            bad.append(f"completed order {oid} has shipment {shipments.get(oid)}")
        if status == "CANCELLED" and scheduled:
            bad.append(f"cancelled order {oid} still has a scheduled shipment")

    # The audit trail: every saga message any module emitted is in its saga's timeline.
    if require_terminal:
        missing = unrecorded(files.data_dir, orders, files=files)
        bad += [f"{db}: {t} of order {k} is not in its timeline" for db, t, k in missing[:5]]
        if len(missing) > 5:
            bad.append(f"{len(missing) - 5} more saga messages not in their timelines")

    # Nothing left behind in any outbox; nothing parked as a dead letter.
    for name in MODULES:
        if not files.exists(name):
            continue
        ((pending,),) = files.all(name, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")
        if require_terminal and pending:
            bad.append(f"{name}: {pending} outbox messages undelivered")
        ((dead,),) = files.all(name, "SELECT count(*) FROM dead_letter WHERE status = 'DEAD'")
        if dead:
            bad.append(f"{name}: {dead} dead letters")
        ((parked,),) = files.all(name, "SELECT count(*) FROM dead_letter WHERE status = 'RETRYING'")
        if require_terminal and parked:
            bad.append(f"{name}: {parked} messages still waiting for a retry")
    return bad
