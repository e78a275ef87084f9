"""Builds the order module; imported only by the composition root."""

from __future__ import annotations

from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.module import ModuleHandle
from bus.sqlite import Database
from modules.order import contract
from modules.order.api import TerminalWaiters, order_routes
from modules.order.db import OrderBase
from modules.order.handlers import (
    cancel_order,
    complete_order,
    note_compensation_pending,
    record_customer,
    record_product,
    request_cancellation,
)

__all__ = ["build"]


def build(
    data_dir: Path,
    *,
    pivot: str = "complete",
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> ModuleHandle:
    """``pivot`` names the saga step whose success makes an order past cancelling."""
    db = Database(
        data_dir / "order.sqlite3",
        "order",
        OrderBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    waiters = TerminalWaiters()
    db.commit_hooks.append(waiters.on_commit)
    commands: dict[str, Route] = {
        contract.CompleteOrder.TYPE: complete_order,
        contract.CancelOrder.TYPE: cancel_order,
        contract.RequestCancellation.TYPE: request_cancellation,
        contract.NoteCompensationPending.TYPE: note_compensation_pending,
        contract.RecordProduct.TYPE: record_product,
        contract.RecordCustomer.TYPE: record_customer,
    }
    return ModuleHandle("order", db, commands, order_routes(db, waiters, pivot=pivot))
