"""The fraud check's table, handlers and builder."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.module import ModuleHandle
from bus.sqlite import Database, Tx
from bus.tables import add_bus_tables
from modules.faults import NO_FAULTS, StepFaults
from tests.fraud.contract import (
    CheckFraud,
    ClearanceRevoked,
    FraudCleared,
    FraudSuspected,
    RevokeClearance,
)

__all__ = ["LIMIT_CENTS", "build"]

LIMIT_CENTS = 5_000
"""Orders above this amount are suspected."""


class FraudBase(SQLModel, registry=registry()):
    pass


class CheckRow(FraudBase, table=True):
    """One row per order: CLEARED, SUSPECTED, REVOKED, or VOIDED (revoked before checked)."""

    __tablename__ = "checks"

    order_id: str = Field(primary_key=True)
    status: str
    reason: str | None = None


add_bus_tables(FraudBase.metadata)


def check_fraud(tx: Tx, command: CheckFraud, faults: StepFaults) -> None:
    row = tx.one("SELECT status, reason FROM checks WHERE order_id = ?", (command.order_id,))
    if row is None:
        reason = None
        if faults.fails(command.order_id):
            reason = "injected_fault"
        elif command.amount_cents > LIMIT_CENTS:
            reason = "amount_too_high"
        row = ("SUSPECTED" if reason else "CLEARED", reason)
        tx.execute("INSERT INTO checks (order_id, status, reason) VALUES (?,?,?)",
                   (command.order_id, *row))  # fmt: skip
    if row[0] == "CLEARED":
        tx.emit(FraudCleared(order_id=command.order_id))
    else:
        reason = row[1] if row[0] == "SUSPECTED" else "already_revoked"
        tx.emit(FraudSuspected(order_id=command.order_id, reason=reason))


def revoke_clearance(tx: Tx, command: RevokeClearance) -> None:
    row = tx.one("SELECT status FROM checks WHERE order_id = ?", (command.order_id,))
    if row is None:
        tx.execute("INSERT INTO checks (order_id, status) VALUES (?, 'VOIDED')",
                   (command.order_id,))  # fmt: skip
    elif row[0] == "CLEARED":
        tx.execute("UPDATE checks SET status = 'REVOKED' WHERE order_id = ?", (command.order_id,))
    tx.emit(ClearanceRevoked(order_id=command.order_id, reason=command.reason))


def build(
    data_dir: Path,
    *,
    faults: StepFaults = NO_FAULTS,
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> ModuleHandle:
    db = Database(
        data_dir / "fraud.sqlite3", "fraud", FraudBase.metadata,
        synchronous=synchronous, crash_points=crash_points,
    )  # fmt: skip
    commands: dict[str, Route] = {
        CheckFraud.TYPE: partial(check_fraud, faults=faults),
        RevokeClearance.TYPE: revoke_clearance,
    }
    return ModuleHandle("fraud", db, commands)
