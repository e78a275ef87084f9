"""Builds the shipping module; imported only by the composition root."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.module import ModuleHandle
from bus.sqlite import Database
from modules.faults import NO_FAULTS, StepFaults
from modules.shipping import contract
from modules.shipping.db import ShippingBase
from modules.shipping.domain import DEFAULT_COUNTRIES
from modules.shipping.handlers import cancel_shipment, schedule_shipment

__all__ = ["build"]


def build(
    data_dir: Path,
    *,
    countries: frozenset[str] = DEFAULT_COUNTRIES,
    faults: StepFaults = NO_FAULTS,
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> ModuleHandle:
    db = Database(
        data_dir / "shipping.sqlite3",
        "shipping",
        ShippingBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    commands: dict[str, Route] = {
        contract.ScheduleShipment.TYPE: partial(
            schedule_shipment, countries=countries, faults=faults
        ),
        contract.CancelShipment.TYPE: cancel_shipment,
    }
    return ModuleHandle("shipping", db, commands)
