"""Builds checkout (orchestrator or watchdog, and the tracker); imported only by the
composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from bus.consumer import Route
from bus.faults import CrashPoints
from bus.messages import MessageRegistry
from bus.module import ModuleHandle
from bus.sqlite import Database
from checkout.api import checkout_routes
from checkout.contract import AbortSaga, ResolveSaga, RetrySaga
from checkout.db import CheckoutBase
from checkout.definition import Definitions
from checkout.orchestrator import Orchestrator
from checkout.policy import SagaTimeouts
from checkout.timers import run_due_timers
from checkout.tracker import SagaTracker
from checkout.watch import watch_stuck_sagas
from checkout.watchdog import Watchdog

__all__ = ["build"]


def build(
    data_dir: Path,
    registry: MessageRegistry,
    definitions: Definitions,
    *,
    orchestrate: bool = True,
    timeouts: SagaTimeouts | None = None,
    stuck_after: float = 60.0,
    synchronous: str = "FULL",
    crash_points: CrashPoints | None = None,
) -> tuple[ModuleHandle, SagaTracker]:
    db = Database(
        data_dir / "checkout.sqlite3",
        "checkout",
        CheckoutBase.metadata,
        synchronous=synchronous,
        crash_points=crash_points,
    )
    timeouts = timeouts or SagaTimeouts()
    background: dict[str, Callable[[], Awaitable[None]]] = {
        "stuck-saga-watch": partial(watch_stuck_sagas, db, stuck_after)
    }
    if orchestrate:
        orchestrator = Orchestrator(definitions, timeouts)
        commands: dict[str, Route] = dict.fromkeys(
            orchestrator.handled_types, orchestrator.on_message
        )
        background["saga-timers"] = partial(run_due_timers, db, orchestrator.fire_due)
    else:
        watchdog = Watchdog(registry, definitions, timeouts)
        commands = dict.fromkeys(
            (RetrySaga.TYPE, AbortSaga.TYPE, ResolveSaga.TYPE), watchdog.on_command
        )
        background["saga-watchdog"] = partial(run_due_timers, db, watchdog.fire_due)
    routes = checkout_routes(db, definitions, stuck_after=stuck_after)
    return ModuleHandle("checkout", db, commands, routes, background), SagaTracker(
        definitions, timeouts, step_deadlines=not orchestrate
    )
