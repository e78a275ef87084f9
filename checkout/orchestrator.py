"""The orchestrator: loads a saga, asks ``decide`` what to do, and stores the new
state together with the commands it sends, in one local transaction."""

from __future__ import annotations

import uuid

import msgspec

from bus.messages import Message
from bus.sqlite import Tx
from checkout.contract import AbortSaga, RetrySaga
from checkout.policy import SagaTimeouts
from checkout.saga import SagaState, Transition, abort, decide, resend, start
from checkout.steps import DEFINITION_VERSION, STEPS
from modules import order

__all__ = [
    "HANDLED_TYPES",
    "SagaDefinitionMismatchError",
    "command_id",
    "on_message",
    "save",
]

_NAMESPACE = uuid.UUID("6f1c1c9e-3b7a-4d0e-9a59-2a4f0d5c8e11")
_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(SagaState).decode

REPLY_TYPES: frozenset[str] = frozenset(
    name
    for step in STEPS
    for name in (step.succeeded, *step.failed, step.compensated)
    if name is not None
)
HANDLED_TYPES = REPLY_TYPES | {RetrySaga.TYPE, AbortSaga.TYPE}


class SagaDefinitionMismatchError(Exception):
    """Raised when a stored saga was started by another version of the saga definition."""


def command_id(saga_id: str, step: str, direction: str, attempt: int) -> str:
    """The same command for the same attempt always gets the same id (deduplicated downstream)."""
    return uuid.uuid5(_NAMESPACE, f"{saga_id}:{step}:{direction}:{attempt}").hex


def on_message(tx: Tx, message: Message, timeouts: SagaTimeouts) -> None:
    """Advance the message's saga by one decision (start it on OrderCreated)."""
    row = tx.one(
        "SELECT state, version, definition_version FROM sagas WHERE saga_id = ?", (message.key,)
    )
    if isinstance(message, order.OrderCreated):
        if row is None:
            _insert(tx, start(message), timeouts)
        return
    if row is None:
        return  # not a saga this orchestrator runs (for instance, started in choreography mode)
    if row[2] != DEFINITION_VERSION:
        raise SagaDefinitionMismatchError(f"saga {message.key} has definition v{row[2]}")
    state = _decode_state(row[0])
    if isinstance(message, RetrySaga):
        transition = resend(state)
    elif isinstance(message, AbortSaga):
        transition = abort(state, message.reason)
    else:
        transition = decide(state, message)
    if transition is not None:
        save(tx, transition, version=row[1], timeouts=timeouts)


def _insert(tx: Tx, transition: Transition, timeouts: SagaTimeouts) -> None:
    state = transition.state
    tx.execute(
        "INSERT INTO sagas (saga_id, status, step, state, deadline, expires_at, version,"
        " definition_version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            state.saga_id, state.status, state.step, _encode(state),
            timeouts.step_deadline(tx.now, state.attempt), tx.now + timeouts.saga_deadline,
            1, DEFINITION_VERSION, tx.now, tx.now,
        ),
    )  # fmt: skip
    _send(tx, transition)


def save(tx: Tx, transition: Transition, *, version: int, timeouts: SagaTimeouts) -> None:
    """Store the new state (if nobody else changed it) and its commands, and re-arm the timer."""
    state = transition.state
    updated = tx.execute(
        "UPDATE sagas SET status = ?, step = ?, state = ?, deadline = ?, version = version + 1,"
        " updated_at = ? WHERE saga_id = ? AND version = ?",
        (
            state.status, state.step, _encode(state),
            timeouts.step_deadline(tx.now, state.attempt), tx.now, state.saga_id, version,
        ),
    ).rowcount  # fmt: skip
    if updated != 1:
        raise RuntimeError(f"saga {state.saga_id} changed concurrently")
    _send(tx, transition)


def _send(tx: Tx, transition: Transition) -> None:
    for out in transition.commands:
        message_id = command_id(transition.state.saga_id, out.step, out.direction, out.attempt)
        tx.emit(out.command, message_id=message_id)
