"""The tracker: follows every saga message, in both saga modes, and keeps each
saga's history (the audit trail) and where it stands."""

from __future__ import annotations

from bus.messages import Command, Envelope
from bus.sqlite import Tx
from checkout.contract import SagaAborted
from checkout.policy import SagaTimeouts
from checkout.steps import STEPS

__all__ = ["SagaTracker"]

_RANK = {"RUNNING": 0, "COMPENSATING": 1, "COMPLETED": 2, "COMPENSATED": 2}
_COMPLETED = "order.OrderCompleted"
_CANCELLED = "order.OrderCancelled"
_FAILED = frozenset(name for step in STEPS for name in step.failed) | {SagaAborted.TYPE}


def _step_of_types() -> dict[str, str]:
    """The step a saga is at after each message type: the awaited one."""
    steps: dict[str, str] = {SagaAborted.TYPE: "abort"}
    for index, step in enumerate(STEPS):
        after_success = STEPS[index + 1].name if index + 1 < len(STEPS) else step.name
        steps.setdefault(step.succeeded, after_success)
        for name in (step.command, *step.failed, step.undo, step.compensated):
            if name is not None:
                steps.setdefault(name, step.name)
    return steps


class SagaTracker:
    """Records saga messages into checkout's database (idempotent by message id)."""

    def __init__(self, timeouts: SagaTimeouts | None = None) -> None:
        self.timeouts = timeouts or SagaTimeouts()
        self._step_of = _step_of_types()

    def record(self, tx: Tx, envelope: Envelope) -> None:
        cls = type(envelope.message)
        if cls.KEY != "order_id":
            return  # reference data (products, customers), not part of any saga
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
        if inserted and envelope.type not in ("checkout.RetrySaga", "checkout.AbortSaga"):
            self._advance(tx, envelope, command)

    def _advance(self, tx: Tx, envelope: Envelope, command: bool) -> None:
        status = self._status_after(envelope)
        step = self._step_of.get(envelope.type, "")
        terminal = _RANK[status] == 2
        deadline = None if terminal else self.timeouts.step_deadline(tx.now, 1)
        event_id = None if command else envelope.message_id
        row = tx.one(
            "SELECT status FROM tracked_sagas WHERE saga_id = ?", (envelope.correlation_id,)
        )
        if row is None:
            tx.execute(
                "INSERT INTO tracked_sagas (saga_id, status, step, last_type, last_event_id,"
                " attempt, deadline, started_at, updated_at) VALUES (?,?,?,?,?,1,?,?,?)",
                (
                    envelope.correlation_id, status, step, envelope.type, event_id, deadline,
                    envelope.occurred_at, tx.now,
                ),
            )  # fmt: skip
        elif _RANK[status] >= _RANK[row[0]] and _RANK[row[0]] < 2:
            # Messages can reach the tracker out of order across modules: never
            # move a saga back from compensating, nor out of a terminal state.
            # A message that leaves the saga where it was (a retry, a duplicate
            # reply) keeps the step's attempt count and timer running.
            moved = "(status != ? OR step != ?)"
            tx.execute(
                "UPDATE tracked_sagas SET"  # noqa: S608 - constant fragments
                f" attempt = CASE WHEN {moved} THEN 1 ELSE attempt END,"
                f" deadline = CASE WHEN {moved} OR ? IS NULL THEN ? ELSE deadline END,"
                " status = ?, step = ?, last_type = ?, last_event_id = coalesce(?, last_event_id),"
                " updated_at = ? WHERE saga_id = ?",
                (
                    status, step, status, step, deadline, deadline, status, step, envelope.type,
                    event_id, tx.now, envelope.correlation_id,
                ),
            )  # fmt: skip

    def _status_after(self, envelope: Envelope) -> str:
        if envelope.type == _COMPLETED:
            return "COMPLETED"
        if envelope.type == _CANCELLED:
            return "COMPENSATED"
        compensating = type(envelope.message).COMPENSATION or envelope.type in _FAILED
        return "COMPENSATING" if compensating else "RUNNING"
