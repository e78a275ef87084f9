"""The saga's decisions, as a pure function of its state and the reply it receives.

No I/O and no clock: ``start`` and ``decide`` return the next state and the
commands to send, and the orchestrator persists both in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec

from bus.messages import Command, Message
from checkout.steps import STEPS, Step, step_named
from modules import order

__all__ = [
    "Outgoing",
    "SagaState",
    "SagaStatus",
    "Transition",
    "abort",
    "decide",
    "on_timeout",
    "past_no_return",
    "resend",
    "start",
]


class SagaStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


class SagaState(msgspec.Struct, frozen=True, kw_only=True):
    """Where one checkout stands.

    ``step`` is the step whose reply is awaited: its action while RUNNING, its
    compensation while COMPENSATING. ``done`` lists the steps that succeeded;
    ``to_undo`` the compensations still to run, in the order they will run.
    """

    saga_id: str
    status: SagaStatus
    step: str
    done: tuple[str, ...]
    to_undo: tuple[str, ...] = ()
    reason: str | None = None
    attempt: int = 1
    order: order.OrderCreated


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command to send, named by step and direction so its id can be deterministic."""

    step: str
    direction: str  # "forward" or "compensate"
    attempt: int
    command: Command


@dataclass(frozen=True, slots=True)
class Transition:
    state: SagaState
    commands: tuple[Outgoing, ...]


def _next_step(step: Step) -> Step | None:
    index = STEPS.index(step) + 1
    return STEPS[index] if index < len(STEPS) else None


def _run(state: SagaState, step: Step) -> Transition:
    assert step.action is not None
    new = msgspec.structs.replace(state, status=SagaStatus.RUNNING, step=step.name, attempt=1)
    return Transition(new, (Outgoing(step.name, "forward", 1, step.action(state.order)),))


def _undo_next(state: SagaState, to_undo: tuple[str, ...], reason: str) -> Transition:
    if not to_undo:
        done = msgspec.structs.replace(
            state, status=SagaStatus.COMPENSATED, step="", to_undo=(), reason=reason
        )
        return Transition(done, ())
    step = step_named(to_undo[0])
    assert step.compensation is not None
    new = msgspec.structs.replace(
        state,
        status=SagaStatus.COMPENSATING,
        step=step.name,
        to_undo=to_undo,
        reason=reason,
        attempt=1,
    )
    command = step.compensation(state.order, reason)
    return Transition(new, (Outgoing(step.name, "compensate", 1, command),))


def _compensations(steps: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in reversed(steps) if step_named(name).compensation is not None)


def start(created: order.OrderCreated) -> Transition:
    """Begin the saga for a newly created order: its first step is already done."""
    state = SagaState(
        saga_id=created.order_id,
        status=SagaStatus.RUNNING,
        step=STEPS[0].name,
        done=(),
        order=created,
    )
    return decide(state, created) or Transition(state, ())


def decide(state: SagaState, reply: Message) -> Transition | None:
    """The next state and commands after ``reply``; None if the reply changes nothing.

    Replies that do not answer the awaited step (a late duplicate, an answer to
    an earlier attempt) are ignored: the participants make every command
    idempotent, so the awaited reply still comes.
    """
    if state.status.terminal:
        return None
    step = step_named(state.step)
    reply_type = reply.TYPE
    if state.status is SagaStatus.RUNNING:
        if reply_type == step.succeeded:
            state = msgspec.structs.replace(state, done=(*state.done, step.name))
            following = _next_step(step)
            if following is None:
                return Transition(
                    msgspec.structs.replace(state, status=SagaStatus.COMPLETED, step=""), ()
                )
            return _run(state, following)
        if reply_type in step.failed:
            reason = f"{step.name} failed: {getattr(reply, 'reason', '') or 'unknown'}"
            return _undo_next(state, _compensations(state.done), reason)
        return None
    if reply_type == step.compensated:
        return _undo_next(state, state.to_undo[1:], state.reason or "")
    return None


def past_no_return(state: SagaState) -> bool:
    """Once the shipment is scheduled the saga can only go forward (the pivot)."""
    return state.status is SagaStatus.RUNNING and step_named(state.step).compensation is None


def abort(state: SagaState, reason: str) -> Transition | None:
    """Compensate now, including the step in flight (its undo is safe if it never ran).

    None (nothing to do) once the saga has finished, is already compensating,
    or is past its point of no return.
    """
    if state.status is not SagaStatus.RUNNING or past_no_return(state):
        return None
    return _undo_next(state, _compensations((*state.done, state.step)), reason)


def resend(state: SagaState) -> Transition | None:
    """Send the awaited step's command again, as the next attempt (same step, new id)."""
    if state.status.terminal:
        return None
    step = step_named(state.step)
    new = msgspec.structs.replace(state, attempt=state.attempt + 1)
    if state.status is SagaStatus.RUNNING:
        assert step.action is not None
        command = step.action(state.order)
        return Transition(new, (Outgoing(step.name, "forward", new.attempt, command),))
    assert step.compensation is not None
    command = step.compensation(state.order, state.reason or "")
    return Transition(new, (Outgoing(step.name, "compensate", new.attempt, command),))


def on_timeout(state: SagaState, max_attempts: int) -> Transition | None:
    """The awaited reply did not come in time.

    A forward step is sent again until ``max_attempts``, then the saga
    compensates. A compensation, or a step past the point of no return, is
    sent again until it succeeds: those must happen eventually.
    """
    forward = state.status is SagaStatus.RUNNING and not past_no_return(state)
    if forward and state.attempt >= max_attempts:
        return abort(state, f"{state.step} timed out after {state.attempt} attempts")
    return resend(state)
