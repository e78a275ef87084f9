"""Builds the inventory module; imported only by the composition root."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.module import ModuleHandle
from bus.sqlite import Database
from modules.faults import NO_FAULTS, StepFaults
from modules.inventory import contract
from modules.inventory.api import inventory_routes
from modules.inventory.db import InventoryBase
from modules.inventory.handlers import release_stock, reserve_stock

__all__ = ["build"]


def build(
    data_dir: Path,
    *,
    faults: StepFaults = NO_FAULTS,
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> ModuleHandle:
    db = Database(
        data_dir / "inventory.sqlite3",
        "inventory",
        InventoryBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    commands: dict[str, Route] = {
        contract.ReserveStock.TYPE: partial(reserve_stock, faults=faults),
        contract.ReleaseStock.TYPE: release_stock,
    }
    return ModuleHandle("inventory", db, commands, inventory_routes(db))
