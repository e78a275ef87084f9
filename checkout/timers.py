"""Durable timers for the orchestrator: step timeouts with backoff, and the saga deadline.

Deadlines live in the saga rows. Firing one is a transaction like any other
decision (state, version and outgoing commands commit together), so a restart
neither loses a pending timeout nor fires it twice.
"""

from __future__ import annotations

from functools import partial

import anyio
import msgspec

from bus.sqlite import Database, Tx
from checkout.orchestrator import save
from checkout.policy import SagaTimeouts
from checkout.saga import SagaState, SagaStatus, Transition, abort, on_timeout, past_no_return

__all__ = ["fire_due", "run_timers"]

_decode_state = msgspec.json.Decoder(SagaState).decode
_ACTIVE = "('RUNNING', 'COMPENSATING')"


def fire_due(tx: Tx, timeouts: SagaTimeouts, limit: int = 256) -> float | None:
    """Fire every due timer; return when the next one is due (None if none is pending)."""
    rows = tx.execute(
        f"SELECT state, version, deadline, expires_at FROM sagas WHERE status IN {_ACTIVE}"  # noqa: S608
        " AND (deadline <= ? OR expires_at <= ?) ORDER BY deadline LIMIT ?",
        (tx.now, tx.now, limit),
    ).fetchall()
    for blob, version, deadline, expires_at in rows:
        state = _decode_state(blob)
        transition: Transition | None = None
        if (
            expires_at <= tx.now
            and state.status is SagaStatus.RUNNING
            and not past_no_return(state)
        ):
            transition = abort(state, "saga deadline exceeded")
        if transition is None and deadline <= tx.now:
            transition = on_timeout(state, timeouts.attempts)
        if transition is None:
            # Past the saga deadline but not abortable: only the step timer remains.
            tx.execute(
                "UPDATE sagas SET expires_at = ? WHERE saga_id = ?", (deadline, state.saga_id)
            )
            continue
        save(tx, transition, version=version, timeouts=timeouts)
    if len(rows) == limit:
        return tx.now
    row = tx.one(f"SELECT min(min(deadline, expires_at)) FROM sagas WHERE status IN {_ACTIVE}")  # noqa: S608
    return None if row is None or row[0] is None else float(row[0])


async def run_timers(db: Database, timeouts: SagaTimeouts, wakeup_every: float = 1.0) -> None:
    """Fire due timers until cancelled; new sagas are picked up within ``wakeup_every``."""
    while True:
        next_due = await db.transact(partial(fire_due, timeouts=timeouts))
        wait = wakeup_every if next_due is None else next_due - db.clock()
        await anyio.sleep(min(max(wait, 0.0), wakeup_every))
