"""Choreography's answer to timeouts and operators, without a coordinator.

Nobody owns a choreographed saga, so the tracker's view of it is what times
out: when a saga has not moved within its step timeout, the watchdog publishes
the event that should have moved it once more (a copy with a new id; every
reaction is idempotent per order); after the step's attempts, or past the saga
deadline, it publishes ``SagaAborted``, and each module undoes its step in
turn, last first. Operators' retry and abort do the same on demand. The
deadlines live in ``tracked_sagas``, so they survive a restart, and firing one
is a transaction, so it fires once.
"""

from __future__ import annotations

from functools import partial

import anyio

from bus.messages import Message, MessageRegistry
from bus.sqlite import Database, Tx
from checkout.contract import AbortSaga, RetrySaga, SagaAborted
from checkout.policy import SagaTimeouts

__all__ = ["Watchdog"]

_ACTIVE = "('RUNNING', 'COMPENSATING')"
_PIVOT = "complete"  # past the scheduled shipment, a saga only goes forward


class Watchdog:
    """Step timeouts, the saga deadline and operator actions for choreographed sagas."""

    def __init__(self, registry: MessageRegistry, timeouts: SagaTimeouts) -> None:
        self.registry = registry
        self.timeouts = timeouts

    # -- operator commands, handled in checkout's subscription ----------------

    def on_command(self, tx: Tx, command: Message) -> None:
        row = tx.one(
            "SELECT status, step, attempt FROM tracked_sagas WHERE saga_id = ?", (command.key,)
        )
        if row is None or row[0] not in ("RUNNING", "COMPENSATING"):
            return
        status, step, attempt = row
        if isinstance(command, RetrySaga):
            self._nudge(tx, command.key, attempt)
        elif isinstance(command, AbortSaga) and status == "RUNNING" and step != _PIVOT:
            self._abort(tx, command.key, command.reason)

    # -- timers ----------------------------------------------------------------

    def fire_due(self, tx: Tx, limit: int = 256) -> float | None:
        """Nudge or abort every saga whose timer is due; return the next due time."""
        expired_before = tx.now - self.timeouts.saga_deadline
        rows = tx.execute(
            "SELECT saga_id, status, step, attempt, deadline, started_at FROM tracked_sagas"  # noqa: S608
            f" WHERE status IN {_ACTIVE} AND (deadline <= ? OR (status = 'RUNNING'"
            " AND step != ? AND started_at <= ?)) ORDER BY deadline LIMIT ?",
            (tx.now, _PIVOT, expired_before, limit),
        ).fetchall()
        for saga_id, status, step, attempt, _, started_at in rows:
            abortable = status == "RUNNING" and step != _PIVOT
            if abortable and started_at <= expired_before:
                self._abort(tx, saga_id, "saga deadline exceeded")
            elif abortable and attempt >= self.timeouts.attempts:
                self._abort(tx, saga_id, f"{step} timed out after {attempt} attempts")
            else:
                self._nudge(tx, saga_id, attempt)
        if len(rows) == limit:
            return tx.now
        row = tx.one(f"SELECT min(deadline) FROM tracked_sagas WHERE status IN {_ACTIVE}")  # noqa: S608
        return None if row is None or row[0] is None else float(row[0])

    async def run(self, db: Database, wakeup_every: float = 1.0) -> None:
        while True:
            next_due = await db.transact(partial(self.fire_due))
            wait = wakeup_every if next_due is None else next_due - db.clock()
            await anyio.sleep(min(max(wait, 0.0), wakeup_every))

    # -- the two moves -----------------------------------------------------------

    def _nudge(self, tx: Tx, saga_id: str, attempt: int) -> None:
        """Publish the saga's last event again, as a new message."""
        row = tx.one(
            "SELECT t.type, t.version, t.payload, t.context FROM tracked_sagas s"
            " JOIN timeline t ON t.message_id = s.last_event_id WHERE s.saga_id = ?",
            (saga_id,),
        )
        if row is not None:
            type_name, version, payload, context = row
            tx.emit(self.registry.decode(type_name, version, payload), context=context)
        self._rearm(tx, saga_id, attempt + 1, None)

    def _abort(self, tx: Tx, saga_id: str, reason: str) -> None:
        row = tx.one(
            "SELECT payload, context FROM timeline WHERE saga_id = ?"
            " AND (context IS NOT NULL OR type = 'order.OrderCreated')"
            " ORDER BY context IS NULL LIMIT 1",
            (saga_id,),
        )
        if row is None:
            return
        context = row[1] or row[0]  # the order as created: the saga's context
        tx.emit(SagaAborted(order_id=saga_id, reason=reason), context=context)
        self._rearm(tx, saga_id, 1, "COMPENSATING")

    def _rearm(self, tx: Tx, saga_id: str, attempt: int, status: str | None) -> None:
        tx.execute(
            "UPDATE tracked_sagas SET attempt = ?, deadline = ?, status = coalesce(?, status),"
            " updated_at = ? WHERE saga_id = ?",
            (attempt, self.timeouts.step_deadline(tx.now, attempt), status, tx.now, saga_id),
        )
