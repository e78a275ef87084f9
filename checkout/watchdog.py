"""Choreography's answer to timeouts and operators, without a coordinator.

Nobody owns a choreographed saga, so the tracker's view of it is what times
out: when a saga has not moved within its step's timeout, the watchdog
publishes the message that should have moved it once more (a copy with a new
id; every reaction is idempotent per order). After the step's attempts, or
past the saga deadline, it aborts: it sends the pivot's lock command, whose
answer starts the undo chain (or says the pivot already won). Operators' retry
and abort do the same on demand. The deadlines live in ``tracked_sagas``, so
they survive a restart, and firing one is a transaction, so it fires once.
"""

from __future__ import annotations

import logging

import msgspec

from bus.messages import Message, MessageRegistry
from bus.sqlite import Tx
from checkout.context import decode_context
from checkout.contract import (
    AbortSaga,
    ResolveSaga,
    RetrySaga,
    SagaParked,
    SagaResolved,
    SagaResumed,
)
from checkout.db import TRACE_COLUMNS
from checkout.definition import Definitions, SagaDefinition, StepKind
from checkout.policy import SagaTimeouts
from telemetry import metrics, tracing

__all__ = ["Watchdog"]

log = logging.getLogger("checkout.saga")

_ACTIVE = "('RUNNING', 'COMPENSATING')"


class Watchdog:
    """Step timeouts, the saga deadline and operator actions for choreographed sagas."""

    def __init__(
        self, registry: MessageRegistry, definitions: Definitions, timeouts: SagaTimeouts
    ) -> None:
        self.registry = registry
        self.definitions = definitions
        self.timeouts = timeouts

    def _definition(self, version: int | None) -> SagaDefinition:
        return self.definitions.version(version or self.definitions.current.version)

    def _abortable(self, definition: SagaDefinition, status: str, step: str) -> bool:
        """Running, and not past the pivot (at the pivot, its lock decides)."""
        return (
            status == "RUNNING"
            and step in {s.name for s in definition.steps}
            and definition.step(step).kind is not StepKind.RETRIABLE
        )

    # -- operator commands, handled in checkout's subscription ----------------

    def on_command(self, tx: Tx, command: Message) -> None:
        row = tx.one(
            "SELECT status, step, attempt, definition_version FROM tracked_sagas WHERE saga_id = ?",
            (command.key,),
        )
        if row is None or row[0] not in ("RUNNING", "COMPENSATING", "PARKED"):
            return
        status, step, attempt, version = row
        if status == "PARKED":
            if isinstance(command, RetrySaga):
                tx.emit(SagaResumed(order_id=command.key, step=step))
                tx.execute("UPDATE tracked_sagas SET status = 'COMPENSATING' WHERE saga_id = ?",
                           (command.key,))  # fmt: skip
                self._nudge(tx, command.key, 0)
            elif isinstance(command, ResolveSaga):
                self._resolve(tx, command.key, self._definition(version), step, command.note)
            return
        if isinstance(command, RetrySaga):
            self._nudge(tx, command.key, attempt)
        elif isinstance(command, AbortSaga) and self._abortable(
            self._definition(version), status, step
        ):
            self._abort(tx, command.key, self._definition(version), command.reason)

    # -- timers ----------------------------------------------------------------

    def fire_due(self, tx: Tx, limit: int = 256) -> float | None:
        """Nudge or abort every saga whose timer is due; return the next due time."""
        expired_before = tx.now - self.timeouts.saga_deadline
        rows = tx.execute(
            "SELECT saga_id, status, step, attempt, started_at, definition_version,"  # noqa: S608
            f" {TRACE_COLUMNS} FROM tracked_sagas WHERE status IN {_ACTIVE} AND (deadline <= ?"
            " OR (status = 'RUNNING' AND started_at <= ?)) ORDER BY deadline LIMIT ?",
            (tx.now, expired_before, limit),
        ).fetchall()
        for saga_id, status, step, attempt, started_at, version, *trace in rows:
            definition = self._definition(version)
            abortable = self._abortable(definition, status, step)
            attempts = (
                definition.step(step).attempts if step in {s.name for s in definition.steps}
                else None
            ) or self.timeouts.attempts  # fmt: skip
            expired = abortable and started_at <= expired_before
            if tracing.ENABLED:  # what the watchdog sends goes on in the saga's trace
                tx.trace = tracing.saga_moved(
                    tuple(trace), "saga deadline" if expired else "saga step timeout",
                    order_id=saga_id, module="checkout", step=step, attempt=attempt,
                    compensation=status == "COMPENSATING",
                )  # fmt: skip
            if expired:
                self._abort(tx, saga_id, definition, "saga deadline exceeded")
            elif abortable and attempt >= attempts:
                self._abort(tx, saga_id, definition, f"{step} timed out after {attempt} attempts")
            elif status == "COMPENSATING" and attempt >= self.timeouts.undo_attempts:
                self._park(tx, saga_id, step, attempt)
            else:
                self._nudge(tx, saga_id, attempt)
        if len(rows) == limit:
            return tx.now
        row = tx.one(f"SELECT min(deadline) FROM tracked_sagas WHERE status IN {_ACTIVE}")  # noqa: S608
        return None if row is None or row[0] is None else float(row[0])

    # -- the two moves -----------------------------------------------------------

    def _nudge(self, tx: Tx, saga_id: str, attempt: int) -> None:
        """Publish the message that drives the saga's next move again, as a new message."""
        row = tx.one(
            "SELECT t.type, t.version, t.payload, t.context FROM tracked_sagas s"
            " JOIN timeline t ON t.message_id = s.last_event_id WHERE s.saga_id = ?",
            (saga_id,),
        )
        if row is not None:
            type_name, version, payload, context = row
            tx.emit(self.registry.decode(type_name, version, payload), context=context)
        self._rearm(tx, saga_id, attempt + 1, None)

    def _abort(self, tx: Tx, saga_id: str, definition: SagaDefinition, reason: str) -> None:
        """Take the pivot's lock: its answer undoes the saga, or says the pivot won."""
        row = tx.one(
            "SELECT context FROM timeline WHERE saga_id = ? AND context IS NOT NULL LIMIT 1",
            (saga_id,),
        )
        lock = definition.pivot.lock
        if row is None or lock is None:
            return
        context = bytes(row[0])
        tx.emit(lock.build(decode_context(context)[1], reason), context=context)
        self._rearm(tx, saga_id, 1, "COMPENSATING")

    def _park(self, tx: Tx, saga_id: str, step: str, attempts: int) -> None:
        """Stop retrying an undo that keeps failing: an operator takes it from here."""
        error = tx.one(
            "SELECT payload FROM timeline WHERE saga_id = ? AND type IN"  # noqa: S608
            f" ({','.join('?' * len(self._refusals))}) ORDER BY occurred_at DESC LIMIT 1",
            (saga_id, *self._refusals),
        )
        reason = msgspec.json.decode(error[0]).get("reason") if error else None
        tx.execute("UPDATE tracked_sagas SET status = 'PARKED', updated_at = ? WHERE saga_id = ?",
                   (tx.now, saga_id))  # fmt: skip
        tx.emit(SagaParked(order_id=saga_id, step=step, attempts=attempts, error=reason))
        metrics.saga_parked()
        log.warning("saga %s parked: compensation %r failed %d times (last error: %s)",
                    saga_id, step, attempts, reason, extra={"order_id": saga_id})  # fmt: skip

    def _resolve(
        self, tx: Tx, saga_id: str, definition: SagaDefinition, step: str, note: str
    ) -> None:
        """The parked undo was done by hand: undo the step before it, and so on."""
        following = definition.undo_before(definition.step(step))
        tx.emit(SagaResolved(order_id=saga_id, step=step, note=note, ended=following is None))
        if following is None or following.compensation is None:
            tx.execute("UPDATE tracked_sagas SET status = 'COMPENSATED' WHERE saga_id = ?",
                       (saga_id,))  # fmt: skip
            return
        context = tx.one(
            "SELECT context FROM timeline WHERE saga_id = ? AND context IS NOT NULL LIMIT 1",
            (saga_id,),
        )
        asked = tx.one(
            "SELECT payload FROM timeline WHERE saga_id = ? AND kind = 'command'"
            " AND compensation = 1 AND type != ? ORDER BY occurred_at DESC LIMIT 1",
            (saga_id, ResolveSaga.TYPE),
        )
        reason = (msgspec.json.decode(asked[0]).get("reason") if asked else None) or note
        if context is not None:
            data = decode_context(bytes(context[0]))[1]
            tx.emit(following.compensation.build(data, reason), context=bytes(context[0]))
        tx.execute("UPDATE tracked_sagas SET status = 'COMPENSATING' WHERE saga_id = ?",
                   (saga_id,))  # fmt: skip
        self._rearm(tx, saga_id, 1, None)

    @property
    def _refusals(self) -> tuple[str, ...]:
        return tuple(
            failed.TYPE
            for definition in self.definitions.all
            for step in definition.steps
            for failed in step.compensation_failed
        )

    def _rearm(self, tx: Tx, saga_id: str, attempt: int, status: str | None) -> None:
        tx.execute(
            "UPDATE tracked_sagas SET attempt = ?, deadline = ?, status = coalesce(?, status),"
            " updated_at = ? WHERE saga_id = ?",
            (attempt, self.timeouts.step_deadline(tx.now, attempt), status, tx.now, saga_id),
        )
