"""The orchestrator's decisions: one pure function of the saga's state and what happened.

No I/O and no clock. ``decide(definition, state, input)`` returns the next
state and the commands to send; the orchestrator (``checkout.orchestrator``)
loads the state, calls it and stores both in one transaction. The inputs are
the participants' replies, the step timer, the saga deadline and the
operators' retry and abort.

An abort (an operator's, a deadline's, a step that keeps timing out) first
takes the pivot's lock, so that it can never race the pivot: the pivot's
module answers either that the saga may be undone (it will not let the pivot
succeed from now on) or that the pivot already succeeded (the abort is moot).
A customer's cancellation takes the same lock directly, and its answer
reaches the saga like any reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec

from bus.messages import Command, Failure, Message
from checkout.definition import SagaData, SagaDefinition, Step, StepKind

__all__ = [
    "Abort",
    "DeadlineExceeded",
    "Input",
    "Outgoing",
    "Reply",
    "Resolve",
    "Retry",
    "SagaState",
    "SagaStatus",
    "StepTimedOut",
    "Transition",
    "abortable",
    "decide",
    "start",
]


class SagaStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    # A compensation failed its every attempt: nothing runs until an operator
    # retries it or resolves it by hand.
    PARKED = "PARKED"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


class SagaState(msgspec.Struct, frozen=True, kw_only=True):
    """Where one saga stands.

    ``step`` is the step whose reply is awaited: its action while RUNNING, its
    compensation while COMPENSATING. ``done`` lists the steps that succeeded;
    ``to_undo`` the compensations still to run, in the order they will run.
    ``cancelling`` holds the reason of an abort waiting for the pivot's lock;
    meanwhile the saga does not go forward.
    """

    saga_id: str
    status: SagaStatus
    step: str
    done: tuple[str, ...]
    to_undo: tuple[str, ...] = ()
    reason: str | None = None
    attempt: int = 1
    cancelling: str | None = None
    last_error: str | None = None
    # Attempts made before the last resume of a parked compensation (command
    # ids stay unique across resumes; the parking limit counts from here).
    resumed_after: int = 0
    order: SagaData


# -- inputs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A participant's event about this saga."""

    message: Message


@dataclass(frozen=True, slots=True)
class StepTimedOut:
    """The awaited reply did not come in time.

    ``attempts`` is the limit of what is awaited: the step's attempts for a
    forward step, the compensation attempts for an undo.
    """

    attempts: int


@dataclass(frozen=True, slots=True)
class DeadlineExceeded:
    """The whole saga ran past its deadline."""


@dataclass(frozen=True, slots=True)
class Retry:
    """An operator asks to send the awaited command again."""


@dataclass(frozen=True, slots=True)
class Abort:
    """An operator asks to compensate now."""

    reason: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """An operator did a parked compensation by hand; the undo goes on from there."""

    note: str


Input = Reply | StepTimedOut | DeadlineExceeded | Retry | Abort | Resolve


# -- outputs --------------------------------------------------------------------


class Direction(StrEnum):
    FORWARD = "forward"
    COMPENSATE = "compensate"
    LOCK = "lock"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command to send, named by step, direction and attempt so its id can be deterministic."""

    step: str
    direction: Direction
    attempt: int
    command: Command


@dataclass(frozen=True, slots=True)
class Transition:
    state: SagaState
    commands: tuple[Outgoing, ...]


# -- the decisions ----------------------------------------------------------------


def start(definition: SagaDefinition, created: SagaData) -> Transition:
    """Begin the saga for a newly created order: its first step is already done."""
    state = SagaState(
        saga_id=created.order_id,
        status=SagaStatus.RUNNING,
        step=definition.first.name,
        done=(),
        order=created,
    )
    return decide(definition, state, Reply(created)) or Transition(state, ())


def decide(definition: SagaDefinition, state: SagaState, event: Input) -> Transition | None:
    """The next state and commands after ``event``; None if it changes nothing.

    A reply that does not answer what the saga awaits (a duplicate, an answer
    to an earlier attempt, a reply from a step already done) changes nothing:
    participants answer every repeated command, so the awaited reply still comes.
    """
    if state.status.terminal:
        return None
    match event:
        case Reply(message):
            if state.status is SagaStatus.RUNNING:
                return _on_reply(definition, state, message)
            return _on_compensated(definition, state, message)
        case StepTimedOut(attempts):
            if state.status is SagaStatus.PARKED:
                return None
            return _on_timeout(definition, state, attempts)
        case DeadlineExceeded():
            return _abort(definition, state, "saga deadline exceeded")
        case Retry():
            if state.status is SagaStatus.PARKED:
                resumed = _replace(
                    state, status=SagaStatus.COMPENSATING, resumed_after=state.attempt
                )
                return _resend(definition, resumed)
            return _resend(definition, state)
        case Abort(reason):
            return _abort(definition, state, reason)
        case Resolve():
            if state.status is not SagaStatus.PARKED:
                return None
            return _undo_next(definition, state, state.to_undo[1:], state.reason or "")


def abortable(definition: SagaDefinition, state: SagaState) -> bool:
    """Whether an abort can still undo the saga: running, and the pivot not done."""
    return (
        state.status is SagaStatus.RUNNING
        and state.cancelling is None
        and definition.pivot.name not in state.done
    )


def _on_reply(definition: SagaDefinition, state: SagaState, message: Message) -> Transition | None:
    step = definition.step(state.step)
    pivot = definition.pivot
    type_name = message.TYPE
    if type_name == step.succeeded.TYPE and step.name not in state.done:
        state = msgspec.structs.replace(state, done=(*state.done, step.name))
        if state.cancelling is not None and step is not pivot:
            return Transition(state, ())  # the lock's answer decides what comes next
        following = definition.after(step)
        if following is None:
            return Transition(_replace(state, status=SagaStatus.COMPLETED, step=""), ())
        return _run(state, following)
    if type_name in {f.TYPE for f in pivot.failed} and pivot.name not in state.done:
        # The pivot's lock is taken (asked by us or by a customer): undo what
        # was done, and the step in flight, whose undo is harmless if it never ran.
        assert isinstance(message, Failure)
        in_flight = (step.name,) if step.name not in state.done else ()
        return _undo_from(definition, state, (*state.done, *in_flight), message.reason)
    if type_name in {f.TYPE for f in step.failed} and step.name not in state.done:
        assert isinstance(message, Failure)
        return _undo_from(definition, state, state.done, f"{step.name} failed: {message.reason}")
    return None


def _on_compensated(
    definition: SagaDefinition, state: SagaState, message: Message
) -> Transition | None:
    step = definition.step(state.step)
    if step.compensated is not None and message.TYPE == step.compensated.TYPE:
        return _undo_next(definition, state, state.to_undo[1:], state.reason or "")
    failed = {f.TYPE for f in step.compensation_failed}
    if message.TYPE in failed:
        # Not now: tried again when the step's timer fires (with backoff).
        assert isinstance(message, Failure)
        return Transition(_replace(state, last_error=message.reason), ())
    return None


def _on_timeout(definition: SagaDefinition, state: SagaState, attempts: int) -> Transition | None:
    step = definition.step(state.step)
    gives_up = (
        state.status is SagaStatus.RUNNING
        and state.cancelling is None
        and step.kind is not StepKind.RETRIABLE
        and step.name not in state.done
        and state.attempt >= attempts
    )
    if gives_up:
        return _abort(definition, state, f"{step.name} timed out after {state.attempt} attempts")
    if state.status is SagaStatus.COMPENSATING and state.attempt - state.resumed_after >= attempts:
        return Transition(_replace(state, status=SagaStatus.PARKED), ())
    # Compensations, the lock and steps after the pivot must happen: again.
    return _resend(definition, state)


def _abort(definition: SagaDefinition, state: SagaState, reason: str) -> Transition | None:
    if not abortable(definition, state):
        return None
    new = _replace(state, cancelling=reason, attempt=1)
    return Transition(new, (_lock(definition, new),))


def _resend(definition: SagaDefinition, state: SagaState) -> Transition | None:
    """Send the awaited command again, as the next attempt (same step, new id)."""
    new = _replace(state, attempt=state.attempt + 1)
    if state.status is SagaStatus.COMPENSATING:
        return Transition(new, (_compensation(definition.step(state.step), new),))
    if state.cancelling is not None:
        return Transition(new, (_lock(definition, new),))
    step = definition.step(state.step)
    if step.name in state.done or step.action is None:
        return None
    return Transition(new, (Outgoing(step.name, Direction.FORWARD, new.attempt,
                                     step.action.build(state.order)),))  # fmt: skip


def _run(state: SagaState, step: Step) -> Transition:
    assert step.action is not None
    new = _replace(state, status=SagaStatus.RUNNING, step=step.name, attempt=1)
    command = step.action.build(state.order)
    return Transition(new, (Outgoing(step.name, Direction.FORWARD, 1, command),))


def _lock(definition: SagaDefinition, state: SagaState) -> Outgoing:
    pivot = definition.pivot
    assert pivot.lock is not None
    assert state.cancelling is not None
    command = pivot.lock.build(state.order, state.cancelling)
    return Outgoing(pivot.name, Direction.LOCK, state.attempt, command)


def _compensation(step: Step, state: SagaState) -> Outgoing:
    assert step.compensation is not None
    command = step.compensation.build(state.order, state.reason or "")
    return Outgoing(step.name, Direction.COMPENSATE, state.attempt, command)


def _undo_from(
    definition: SagaDefinition, state: SagaState, steps: tuple[str, ...], reason: str
) -> Transition:
    return _undo_next(definition, state, definition.undo_order(steps), reason)


def _undo_next(
    definition: SagaDefinition, state: SagaState, to_undo: tuple[str, ...], reason: str
) -> Transition:
    if not to_undo:
        done = _replace(state, status=SagaStatus.COMPENSATED, step="", to_undo=(), reason=reason)
        return Transition(done, ())
    new = _replace(
        state,
        status=SagaStatus.COMPENSATING,
        step=to_undo[0],
        to_undo=to_undo,
        reason=reason,
        attempt=1,
        cancelling=None,
        last_error=None,
        resumed_after=0,
    )
    return Transition(new, (_compensation(definition.step(to_undo[0]), new),))


def _replace(state: SagaState, **changes: object) -> SagaState:
    return msgspec.structs.replace(state, **changes)
