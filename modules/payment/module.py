"""Builds the payment module; imported only by the composition root."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.module import ModuleHandle
from bus.sqlite import Database
from modules.faults import NO_FAULTS, StepFaults
from modules.payment import contract
from modules.payment.api import payment_routes
from modules.payment.db import PaymentBase
from modules.payment.handlers import process_payment, refund_payment

__all__ = ["build"]


def build(
    data_dir: Path,
    *,
    faults: StepFaults = NO_FAULTS,
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> ModuleHandle:
    db = Database(
        data_dir / "payment.sqlite3",
        "payment",
        PaymentBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    commands: dict[str, Route] = {
        contract.ProcessPayment.TYPE: partial(process_payment, faults=faults),
        contract.RefundPayment.TYPE: refund_payment,
    }
    return ModuleHandle("payment", db, commands, payment_routes(db))
