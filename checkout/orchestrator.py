"""The orchestrator: loads a saga, asks ``decide`` what to do, and stores the new
state together with the commands it sends, in one local transaction."""

from __future__ import annotations

import uuid

import msgspec

from bus.messages import Message
from bus.sqlite import Tx
from checkout.saga import SagaState, Transition, decide, start
from checkout.steps import DEFINITION_VERSION, STEPS
from modules import order

__all__ = ["REPLY_TYPES", "SagaDefinitionMismatchError", "on_reply"]

_NAMESPACE = uuid.UUID("6f1c1c9e-3b7a-4d0e-9a59-2a4f0d5c8e11")
_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(SagaState).decode

REPLY_TYPES: frozenset[str] = frozenset(
    name
    for step in STEPS
    for name in (step.succeeded, *step.failed, step.compensated)
    if name is not None
)


class SagaDefinitionMismatchError(Exception):
    """Raised when a stored saga was started by another version of the saga definition."""


def command_id(saga_id: str, step: str, direction: str, attempt: int) -> str:
    """The same command for the same attempt always gets the same id (deduplicated downstream)."""
    return uuid.uuid5(_NAMESPACE, f"{saga_id}:{step}:{direction}:{attempt}").hex


def on_reply(tx: Tx, reply: Message) -> None:
    """Advance the reply's saga by one decision (start it on OrderCreated)."""
    row = tx.one(
        "SELECT state, version, definition_version FROM sagas WHERE saga_id = ?", (reply.key,)
    )
    if isinstance(reply, order.OrderCreated):
        if row is not None:
            return
        transition = start(reply)
        tx.execute(
            "INSERT INTO sagas (saga_id, status, step, state, version, definition_version,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                reply.order_id,
                transition.state.status,
                transition.state.step,
                _encode(transition.state),
                1,
                DEFINITION_VERSION,
                tx.now,
                tx.now,
            ),
        )
        _send(tx, transition)
        return
    if row is None:
        return  # not a saga this orchestrator runs (for instance, started in choreography mode)
    if row[2] != DEFINITION_VERSION:
        raise SagaDefinitionMismatchError(f"saga {reply.key} has definition v{row[2]}")
    transition_or_none = decide(_decode_state(row[0]), reply)
    if transition_or_none is None:
        return
    save(tx, transition_or_none, version=row[1])


def save(tx: Tx, transition: Transition, *, version: int) -> None:
    state = transition.state
    updated = tx.execute(
        "UPDATE sagas SET status = ?, step = ?, state = ?, version = version + 1, updated_at = ?"
        " WHERE saga_id = ? AND version = ?",
        (state.status, state.step, _encode(state), tx.now, state.saga_id, version),
    ).rowcount
    if updated != 1:
        raise RuntimeError(f"saga {state.saga_id} changed concurrently")
    _send(tx, transition)


def _send(tx: Tx, transition: Transition) -> None:
    for out in transition.commands:
        message_id = command_id(transition.state.saga_id, out.step, out.direction, out.attempt)
        tx.emit(out.command, message_id=message_id)
