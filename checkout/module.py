"""Builds checkout (orchestrator and tracker); imported only by the composition root."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.messages import MessageRegistry
from bus.module import ModuleHandle
from bus.sqlite import Database
from checkout.api import checkout_routes
from checkout.db import CheckoutBase
from checkout.orchestrator import HANDLED_TYPES, on_message
from checkout.policy import SagaTimeouts
from checkout.tracker import SagaTracker

__all__ = ["build"]


def build(
    data_dir: Path,
    registry: MessageRegistry,
    *,
    orchestrate: bool = True,
    timeouts: SagaTimeouts | None = None,
    stuck_after: float = 60.0,
    synchronous: str = "NORMAL",
    crash_points: CrashPoints | None = None,
) -> tuple[ModuleHandle, SagaTracker]:
    db = Database(
        data_dir / "checkout.sqlite3",
        "checkout",
        CheckoutBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    handler = partial(on_message, timeouts=timeouts or SagaTimeouts())
    commands: dict[str, Route] = dict.fromkeys(HANDLED_TYPES, handler) if orchestrate else {}
    handle = ModuleHandle("checkout", db, commands, checkout_routes(db, stuck_after=stuck_after))
    return handle, SagaTracker(registry)
