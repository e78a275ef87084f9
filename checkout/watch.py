"""Reports sagas that have not finished within their deadline, in both saga modes."""

from __future__ import annotations

import logging
import time

import anyio
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from checkout.db import TrackedSagaRow
from telemetry import metrics

__all__ = ["stuck_sagas", "watch_stuck_sagas"]

log = logging.getLogger("checkout.stuck")

TERMINAL = ("COMPLETED", "COMPENSATED")
# Parked sagas are reported once, when they park, and listed as PARKED: not as stuck.
NOT_STUCK = (*TERMINAL, "PARKED")


async def stuck_sagas(db: Database, stuck_after: float, limit: int = 100) -> list[TrackedSagaRow]:
    """Sagas still running ``stuck_after`` seconds after they started, oldest first."""
    query = (
        select(TrackedSagaRow)
        .where(
            col(TrackedSagaRow.status).not_in(NOT_STUCK),
            col(TrackedSagaRow.started_at) < time.time() - stuck_after,
        )
        .order_by(col(TrackedSagaRow.started_at))
        .limit(limit)
    )
    async with AsyncSession(db.reader) as session:
        return list(await session.exec(query))


async def watch_stuck_sagas(db: Database, stuck_after: float) -> None:
    """Log a warning for every stuck saga, once per check, until cancelled."""
    interval = max(1.0, min(stuck_after / 2, 30.0))
    while True:
        await anyio.sleep(interval)
        for row in await stuck_sagas(db, stuck_after):
            metrics.saga_stuck(row.saga_id)
            log.warning(
                "saga %s stuck: %s at step %r for %.0f s (last message %s)",
                row.saga_id, row.status, row.step, time.time() - row.started_at, row.last_type,
                extra={"order_id": row.saga_id},
            )  # fmt: skip
