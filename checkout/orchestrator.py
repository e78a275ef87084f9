"""The orchestrator: the thin shell around ``decide``.

For every input (a reply, an operator's command, a due timer) it loads the
saga's row, asks ``checkout.saga.decide`` under the definition version the saga
started with, and stores the new state, its next deadline and the commands it
sends, in one local transaction. Timers are durable: deadlines live in the
rows, and firing one is a transaction like any other decision, so a restart
neither loses a pending timeout nor fires it twice.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

import msgspec

from bus.messages import Message
from bus.sqlite import Tx
from checkout.contract import (
    AbortSaga,
    ResolveSaga,
    RetrySaga,
    SagaParked,
    SagaResolved,
    SagaResumed,
)
from checkout.db import TRACE_COLUMNS
from checkout.definition import Definitions, Role, SagaData, SagaDefinition
from checkout.policy import SagaTimeouts
from checkout.saga import (
    Abort,
    DeadlineExceeded,
    Input,
    Reply,
    Resolve,
    Retry,
    SagaState,
    SagaStatus,
    StepTimedOut,
    Transition,
    abortable,
    decide,
    start,
)
from telemetry import tracing

__all__ = ["Orchestrator", "command_id"]

log = logging.getLogger("checkout.saga")

_NAMESPACE = uuid.UUID("6f1c1c9e-3b7a-4d0e-9a59-2a4f0d5c8e11")
_NAMESPACE_BYTES = _NAMESPACE.bytes
# The RFC 4122 variant (binary 10) put on a digest's 17th hex digit, as uuid5 does.
_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}
_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(SagaState).decode
_ACTIVE = "('RUNNING', 'COMPENSATING')"
# The name of the span a due timer records (see tracing.saga_moved).
_MOVES = {StepTimedOut: "saga step timeout", DeadlineExceeded: "saga deadline"}


def command_id(saga_id: str, step: str, direction: str, attempt: int, started: float = 0.0) -> str:
    """The same command for the same attempt always gets the same id (deduplicated downstream).

    The first 12 hex digits are when the saga began (``started``, in ms, as in
    ``bus.messages.new_id``), the rest a name-based digest: a saga's commands
    sort by its start, so the participants' inboxes grow at their right edge.
    """
    # uuid5's digest (SHA-1 of namespace and name, version and variant bits set),
    # spelt out: building the UUID object cost as much again (tests/test_saga_decide.py).
    name = f"{saga_id}:{step}:{direction}:{attempt}".encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).hexdigest()
    variant = _VARIANT[digest[16]]
    return f"{int(started * 1000) & 0xFFFFFFFFFFFF:012x}5{digest[13:16]}{variant}{digest[17:32]}"


class Orchestrator:
    """Runs sagas of the given definitions: new ones under the current version."""

    def __init__(self, definitions: Definitions, timeouts: SagaTimeouts) -> None:
        self.definitions = definitions
        self.timeouts = timeouts
        self.start_type = definitions.current.first.succeeded.TYPE

    @property
    def handled_types(self) -> frozenset[str]:
        """Every message type the orchestrator reacts to: replies and operator commands."""
        replies = {
            message.TYPE
            for definition in self.definitions.all
            for step in definition.steps
            for message, role in step.messages()
            if role in (Role.SUCCEEDED, Role.FAILED, Role.COMPENSATED)
        }
        return frozenset(replies | {RetrySaga.TYPE, AbortSaga.TYPE, ResolveSaga.TYPE})

    # -- inputs ------------------------------------------------------------------

    def on_message(self, tx: Tx, message: Message) -> None:
        """Advance the message's saga by one decision (start it on the first step's event)."""
        row = tx.one(
            "SELECT state, version, definition_version, created_at FROM sagas WHERE saga_id = ?",
            (message.key,),
        )
        if self.start_type == message.TYPE:
            if row is None and isinstance(message, SagaData):
                definition = self.definitions.current
                self._insert(tx, definition, start(definition, message))
            return
        if row is None:
            return  # not a saga this orchestrator runs (for instance, begun in choreography)
        event: Input
        if isinstance(message, RetrySaga):
            event = Retry()
        elif isinstance(message, AbortSaga):
            event = Abort(message.reason)
        elif isinstance(message, ResolveSaga):
            event = Resolve(message.note)
        else:
            event = Reply(message)
        definition = self.definitions.version(row[2])
        self._advance(tx, _decode_state(row[0]), row[1], definition, event, started=row[3])

    def fire_due(self, tx: Tx, limit: int = 256) -> float | None:
        """Fire every due timer; return when the next one is due (None if none is pending)."""
        rows = tx.execute(
            "SELECT state, version, definition_version, deadline, expires_at, created_at,"  # noqa: S608
            f" {TRACE_COLUMNS} FROM sagas WHERE status IN {_ACTIVE}"
            " AND (deadline <= ? OR expires_at <= ?) ORDER BY deadline LIMIT ?",
            (tx.now, tx.now, limit),
        ).fetchall()
        for blob, version, definition_version, deadline, expires_at, started, *trace in rows:
            state = _decode_state(blob)
            definition = self.definitions.version(definition_version)
            event: DeadlineExceeded | StepTimedOut
            if expires_at <= tx.now and abortable(definition, state):
                event = DeadlineExceeded()
            elif deadline <= tx.now:
                event = self._timed_out(definition, state)
            else:
                # Past the saga deadline but no longer abortable: only the step timer remains.
                tx.execute(
                    "UPDATE sagas SET expires_at = ? WHERE saga_id = ?", (deadline, state.saga_id)
                )
                continue
            if tracing.ENABLED:  # what the timer sends goes on in the saga's trace
                tx.trace = tracing.saga_moved(
                    tuple(trace), _MOVES[type(event)], order_id=state.saga_id,
                    module="checkout", step=state.step, attempt=state.attempt,
                    compensation=state.status is SagaStatus.COMPENSATING,
                )  # fmt: skip
            self._advance(tx, state, version, definition, event, started=started)
        if len(rows) == limit:
            return tx.now
        row = tx.one(f"SELECT min(min(deadline, expires_at)) FROM sagas WHERE status IN {_ACTIVE}")  # noqa: S608
        return None if row is None or row[0] is None else float(row[0])

    # -- the shell ---------------------------------------------------------------

    def _advance(
        self,
        tx: Tx,
        state: SagaState,
        version: int,
        definition: SagaDefinition,
        event: Input,
        *,
        started: float,
    ) -> None:
        transition = decide(definition, state, event)
        if transition is not None:
            self._save(tx, definition, transition, version=version, started=started)
            _announce(tx, state, transition.state, event)
        elif isinstance(event, DeadlineExceeded | StepTimedOut):
            # Nothing to do now: look again at the next step deadline.
            tx.execute(
                "UPDATE sagas SET deadline = ?, expires_at = max(expires_at, ?) WHERE saga_id = ?",
                (self._deadline(definition, state, tx.now), tx.now, state.saga_id),
            )

    def _timed_out(self, definition: SagaDefinition, state: SagaState) -> StepTimedOut:
        if state.status is SagaStatus.COMPENSATING:
            return StepTimedOut(self.timeouts.undo_attempts)
        return StepTimedOut(definition.step(state.step).attempts or self.timeouts.attempts)

    def _deadline(self, definition: SagaDefinition, state: SagaState, now: float) -> float:
        timeout = definition.step(state.step).timeout if state.step else None
        return self.timeouts.step_deadline(now, state.attempt, timeout)

    def _insert(self, tx: Tx, definition: SagaDefinition, transition: Transition) -> None:
        state = transition.state
        tx.execute(
            # The span that starts the saga is where its timers' spans go on (None if off).
            "INSERT INTO sagas (saga_id, status, step, state, deadline, expires_at, version,"  # noqa: S608
            f" definition_version, created_at, updated_at, {TRACE_COLUMNS})"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                state.saga_id, state.status, state.step, _encode(state),
                self._deadline(definition, state, tx.now), tx.now + self.timeouts.saga_deadline,
                1, definition.version, tx.now, tx.now, *tx.trace,
            ),
        )  # fmt: skip
        _send(tx, transition, tx.now)

    def _save(
        self,
        tx: Tx,
        definition: SagaDefinition,
        transition: Transition,
        *,
        version: int,
        started: float,
    ) -> None:
        """Store the new state (if nobody else changed it) and its commands; re-arm the timer."""
        state = transition.state
        updated = tx.execute(
            "UPDATE sagas SET status = ?, step = ?, state = ?, deadline = ?,"
            " version = version + 1, updated_at = ? WHERE saga_id = ? AND version = ?",
            (
                state.status, state.step, _encode(state),
                self._deadline(definition, state, tx.now), tx.now, state.saga_id, version,
            ),
        ).rowcount  # fmt: skip
        if updated != 1:
            raise RuntimeError(f"saga {state.saga_id} changed concurrently")
        _send(tx, transition, started)


def _announce(tx: Tx, before: SagaState, after: SagaState, event: Input) -> None:
    """Tell the bus (and the log) when a saga parks, resumes or is resolved by hand."""
    saga_id = after.saga_id
    if after.status is SagaStatus.PARKED and before.status is not SagaStatus.PARKED:
        attempts = after.attempt - after.resumed_after
        tx.emit(SagaParked(order_id=saga_id, step=after.step, attempts=attempts,
                           error=after.last_error))  # fmt: skip
        log.warning("saga %s parked: compensation %r failed %d times (last error: %s)",
                    saga_id, after.step, attempts, after.last_error,
                    extra={"order_id": saga_id})  # fmt: skip
    elif before.status is SagaStatus.PARKED and isinstance(event, Retry):
        tx.emit(SagaResumed(order_id=saga_id, step=before.step))
    elif before.status is SagaStatus.PARKED and isinstance(event, Resolve):
        ended = after.status is SagaStatus.COMPENSATED
        tx.emit(SagaResolved(order_id=saga_id, step=before.step, note=event.note, ended=ended))


def _send(tx: Tx, transition: Transition, started: float) -> None:
    saga_id = transition.state.saga_id
    for out in transition.commands:
        message_id = command_id(saga_id, out.step, out.direction, out.attempt, started)
        tx.emit(out.command, message_id=message_id)
