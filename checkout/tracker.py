"""The tracker: follows every saga message, in both saga modes, and keeps each
saga's history (the audit trail) and where it stands."""

from __future__ import annotations

from bus.messages import Command, Envelope, MessageRegistry
from bus.sqlite import Tx
from checkout.steps import STEPS

__all__ = ["SagaTracker"]

_RANK = {"RUNNING": 0, "COMPENSATING": 1, "COMPLETED": 2, "COMPENSATED": 2}
_COMPLETED = "order.OrderCompleted"
_CANCELLED = "order.OrderCancelled"


def _step_of_types() -> dict[str, str]:
    """The step a saga is at after each message type: the awaited one."""
    steps: dict[str, str] = {}
    for index, step in enumerate(STEPS):
        after_success = STEPS[index + 1].name if index + 1 < len(STEPS) else step.name
        steps.setdefault(step.succeeded, after_success)
        for name in (step.command, *step.failed, step.undo, step.compensated):
            if name is not None:
                steps.setdefault(name, step.name)
    return steps


class SagaTracker:
    """Records saga messages into checkout's database (idempotent by message id)."""

    def __init__(self, registry: MessageRegistry) -> None:
        self.registry = registry
        self._step_of = _step_of_types()

    def record(self, tx: Tx, envelope: Envelope) -> None:
        cls = type(envelope.message)
        if cls.KEY != "order_id":
            return  # reference data (products, customers), not part of any saga
        command = issubclass(cls, Command)
        inserted = tx.execute(
            "INSERT OR IGNORE INTO timeline (message_id, saga_id, type, kind, source, target,"
            " compensation, causation_id, occurred_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                envelope.message_id,
                envelope.correlation_id,
                envelope.type,
                "command" if command else "event",
                envelope.source,
                envelope.type.partition(".")[0] if command else None,
                cls.COMPENSATION,
                envelope.causation_id,
                envelope.occurred_at,
                envelope.payload,
            ),
        ).rowcount
        if inserted:
            self._advance(tx, envelope)

    def _advance(self, tx: Tx, envelope: Envelope) -> None:
        status = self._status_after(envelope)
        step = self._step_of.get(envelope.type, "")
        row = tx.one(
            "SELECT status FROM tracked_sagas WHERE saga_id = ?", (envelope.correlation_id,)
        )
        if row is None:
            tx.execute(
                "INSERT INTO tracked_sagas (saga_id, status, step, last_type, started_at,"
                " updated_at) VALUES (?,?,?,?,?,?)",
                (
                    envelope.correlation_id,
                    status,
                    step,
                    envelope.type,
                    envelope.occurred_at,
                    tx.now,
                ),
            )
        elif _RANK[status] >= _RANK[row[0]] and _RANK[row[0]] < 2:
            tx.execute(
                "UPDATE tracked_sagas SET status = ?, step = ?, last_type = ?, updated_at = ?"
                " WHERE saga_id = ?",
                (status, step, envelope.type, tx.now, envelope.correlation_id),
            )

    def _status_after(self, envelope: Envelope) -> str:
        if envelope.type == _COMPLETED:
            return "COMPLETED"
        if envelope.type == _CANCELLED:
            return "COMPENSATED"
        cls = type(envelope.message)
        failed = any(envelope.type in step.failed for step in STEPS)
        return "COMPENSATING" if cls.COMPENSATION or failed else "RUNNING"
