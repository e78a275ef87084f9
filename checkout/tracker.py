"""The tracker: follows every saga message, in both saga styles, and keeps each
saga's history (the audit trail) and where it stands.

Which step a message belongs to, and what status it leaves the saga in, is
read from the definition version the saga runs under.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from bus.messages import Command, Envelope, Message, MessageRegistry
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
from checkout.definition import Definitions, Role, SagaDefinition
from checkout.policy import SagaTimeouts
from telemetry import metrics

__all__ = ["SagaTracker", "labels_of"]

# A tracked_sagas row as the tracker reads it, and as it leaves it.
_COLUMNS = ("status", "definition_version", "step", "started_at", "updated_at", "last_type",
            "last_event_id", "attempt", "deadline")  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM tracked_sagas WHERE saga_id = ?"  # noqa: S608
_Row = tuple[Any, ...]

# A saga only moves up this ladder, whatever order messages arrive in; a parked
# saga leaves PARKED only when an operator resumes or resolves it.
_RANK = {"RUNNING": 0, "COMPENSATING": 1, "PARKED": 1.5, "COMPLETED": 2, "COMPENSATED": 2}
_OPERATOR = frozenset({RetrySaga.TYPE, AbortSaga.TYPE, ResolveSaga.TYPE})
_NEWS = frozenset({SagaParked.TYPE, SagaResumed.TYPE, SagaResolved.TYPE})


def _of_a_saga(cls: type[Message]) -> bool:
    """Keyed by an order: part of a saga (not reference data such as products, customers)."""
    return cls.KEY == "order_id"


def labels_of(definition: SagaDefinition) -> dict[str, tuple[str, str, Role]]:
    """message type -> (the step the saga awaits after it, its status then, the type's role)."""
    labels: dict[str, tuple[str, str, Role]] = {}
    for step in definition.steps:
        for message, role in step.messages():
            following = definition.after(step)
            if role is Role.SUCCEEDED and following is not None:
                labels[message.TYPE] = (following.name, "RUNNING", role)
            elif role is Role.SUCCEEDED:
                labels[message.TYPE] = (step.name, "COMPLETED", role)
            elif role is Role.ACTION:
                labels[message.TYPE] = (step.name, "RUNNING", role)
            elif role is Role.COMPENSATED and step is definition.first:
                labels[message.TYPE] = (step.name, "COMPENSATED", role)
            elif role in (Role.FAILED, Role.COMPENSATED):
                # What the saga awaits next: the undo of the step before.
                undo = definition.undo_before(step) or step
                labels[message.TYPE] = (undo.name, "COMPENSATING", role)
            else:
                labels[message.TYPE] = (step.name, "COMPENSATING", role)
    return labels


class SagaTracker:
    """Records saga messages into checkout's database (idempotent by message id)."""

    def __init__(
        self,
        definitions: Definitions,
        timeouts: SagaTimeouts | None = None,
        *,
        step_deadlines: bool = True,
    ) -> None:
        self.definitions = definitions
        self.timeouts = timeouts or SagaTimeouts()
        # Each saga's step deadline, for the choreography's watchdog; in orchestration
        # the timers live in the orchestrator's rows and this column stays empty.
        self.step_deadlines = step_deadlines
        self.labels = {d.version: labels_of(d) for d in definitions.all}
        # What ``witness`` left a saga's row as, in its transaction: the handler
        # that runs next sends the reply's command, whose record needs that row.
        self._witnessed: tuple[Tx, str, _Row] | None = None

    @staticmethod
    def subscription(registry: MessageRegistry, witnessed: Collection[str]) -> list[str]:
        """The types the tracker's own subscription reads: a saga's events that checkout's
        consumer does not take (it shows the tracker each one it takes).

        No command: commands are sent by checkout alone, and the tracker records
        them as they are emitted (``Database.emit_hooks``), in the same transaction.
        """
        return sorted(
            cls.TYPE
            for cls in registry.types
            if _of_a_saga(cls) and not issubclass(cls, Command) and cls.TYPE not in witnessed
        )

    def witness(self, tx: Tx, envelope: Envelope) -> None:
        """Record a message checkout's own consumer is about to handle, and keep the
        saga's row for the record of the command its handler sends (one read fewer)."""
        self._record(tx, envelope, remember=True)

    def record(self, tx: Tx, envelope: Envelope) -> None:
        """Record a message: one checkout emits, or one only the tracker follows."""
        self._record(tx, envelope, remember=False)

    def _record(self, tx: Tx, envelope: Envelope, *, remember: bool) -> None:
        cls = type(envelope.message)
        if not _of_a_saga(cls):
            return
        command = issubclass(cls, Command)
        inserted = tx.execute(
            "INSERT OR IGNORE INTO timeline (message_id, saga_id, type, version, kind, source,"
            " target, compensation, causation_id, occurred_at, payload, context)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                envelope.message_id, envelope.correlation_id, envelope.type, envelope.version,
                "command" if command else "event", envelope.source,
                envelope.type.partition(".")[0] if command else None, cls.COMPENSATION,
                envelope.causation_id, envelope.occurred_at, envelope.payload, envelope.context,
            ),
        ).rowcount  # fmt: skip
        if inserted and envelope.type not in _OPERATOR:
            self._advance(tx, envelope, remember)

    def _advance(self, tx: Tx, envelope: Envelope, remember: bool) -> None:
        saga_id = envelope.correlation_id
        # Used once, and only by the next record in the witness's own transaction:
        # between the two, only the handler ran, and no handler of checkout's
        # consumer writes tracked_sagas (the watchdog's operator commands do, but
        # the witness remembers no operator command: see ``_record``).
        witnessed, self._witnessed = self._witnessed, None
        row: _Row | None
        if witnessed is not None and witnessed[0] is tx and witnessed[1] == saga_id:
            row = witnessed[2]
        else:
            row = tx.one(_SELECT, (saga_id,))
        if envelope.context is not None:
            version = decode_context(envelope.context)[0]
        elif row is not None and row[1] is not None:
            version = int(row[1])
        else:
            version = self.definitions.current.version
        labels = self.labels.get(version, {})
        step, status, role = labels.get(envelope.type, ("", "RUNNING", Role.ACTION))
        message = envelope.message
        force = False  # an operator's move out of PARKED
        if isinstance(message, SagaParked):
            step, status = message.step, "PARKED"
        elif isinstance(message, SagaResumed):
            step, status, force = message.step, "COMPENSATING", True
        elif isinstance(message, SagaResolved):
            step, force = message.step, True
            status = "COMPENSATED" if message.ended else "COMPENSATING"
        terminal = _RANK[status] == 2
        deadline = (
            self.timeouts.step_deadline(tx.now, 1) if self.step_deadlines and not terminal else None
        )
        # The message that drives the saga's next move: the watchdog sends it
        # again when the saga does not move (an event, or the pivot's lock).
        # Not a refusal of an undo, nor checkout's own news: those drive nothing.
        drives = role is Role.LOCK or (
            not issubclass(type(message), Command)
            and role is not Role.COMPENSATION_FAILED
            and envelope.type not in _NEWS
        )
        event_id = envelope.message_id if drives else None
        if row is None:
            # The span that first saw the saga is where the watchdog's spans go on.
            tx.execute(
                "INSERT INTO tracked_sagas (saga_id, status, step, last_type, last_event_id,"  # noqa: S608
                f" attempt, deadline, definition_version, started_at, updated_at, {TRACE_COLUMNS})"
                " VALUES (?,?,?,?,?,1,?,?,?,?,?,?)",
                (
                    saga_id, status, step, envelope.type, event_id, deadline, version,
                    envelope.occurred_at, tx.now, *tx.trace,
                ),
            )  # fmt: skip
            after: _Row = (status, version, step, envelope.occurred_at, tx.now, envelope.type,
                           event_id, 1, deadline)  # fmt: skip
        elif (force or _RANK[status] >= _RANK[row[0]]) and _RANK[row[0]] < 2:
            # Messages can reach the tracker out of order across modules: never
            # move a saga back from compensating, nor out of a terminal state.
            # A message that leaves the saga where it was (a retry, a duplicate
            # reply) keeps the step's attempt count and timer running.
            moved = status != row[0] or step != row[2]
            after = (
                status, version, step, row[3], tx.now, envelope.type,
                row[6] if event_id is None else event_id,
                1 if moved else row[7],
                deadline if moved or deadline is None else row[8],
            )  # fmt: skip
            self._update(tx, saga_id, row, after)
        else:
            if remember:
                self._witnessed = (tx, saga_id, row)
            return
        if remember:
            self._witnessed = (tx, saga_id, after)
        before = None if row is None else (row[0], row[2], row[3], row[4])
        metrics.saga_transition(before, status, step, envelope.occurred_at, tx.now)

    @staticmethod
    def _update(tx: Tx, saga_id: str, row: _Row, after: _Row) -> None:
        """Write the columns that change, and only those: SQLite updates an index when
        the statement sets one of its columns, whatever the value (most messages leave
        the status, the step and the deadline, all indexed, as they were)."""
        changed = [i for i, value in enumerate(after) if value != row[i]]
        if not changed:
            return
        tx.execute(
            f"UPDATE tracked_sagas SET {', '.join(f'{_COLUMNS[i]} = ?' for i in changed)}"  # noqa: S608
            " WHERE saga_id = ?",
            (*(after[i] for i in changed), saga_id),
        )
