"""The loop that fires a saga engine's due timers: the orchestrator's step timeouts and
deadlines, or the choreography watchdog's nudges and aborts."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from bus.sqlite import Database, Tx

__all__ = ["FireDue", "run_due_timers"]

FireDue = Callable[[Tx], float | None]
"""One pass over the due timers, in a transaction; returns when the next is due (or None)."""


async def run_due_timers(db: Database, fire_due: FireDue, wakeup_every: float = 1.0) -> None:
    """Run ``fire_due`` whenever a timer is due, until cancelled; timers armed meanwhile
    (by new sagas) are seen within ``wakeup_every`` seconds."""
    while True:
        next_due = await db.transact(fire_due)
        wait = wakeup_every if next_due is None else next_due - db.clock()
        await anyio.sleep(min(max(wait, 0.0), wakeup_every))
