"""What a saga definition is made of, the rules it must keep, and what is derived from it.

A definition is data: an ordered tuple of steps, each run by one module, each
of a kind the saga literature names:

- **compensatable** steps run before the pivot and can be undone;
- the **pivot** is the go/no-go step: once it succeeds, the saga only goes
  forward. It takes a lock in its module (the *semantic lock*) that a
  cancellation takes too, so the two never both win;
- **retriable** steps run after the pivot; they cannot fail for business
  reasons and are retried until they succeed.

The orchestrator (``checkout.saga``), the choreography's reactions
(``checkout.choreography``), the tracker's statuses and labels
(``checkout.tracker``), the timers, the watchdog and the diagrams
(``checkout.diagrams``) all read a definition; none of them lists a step.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from bus.messages import Command, Compensated, Event, Failure, Message
from modules import order

__all__ = [
    "DefinitionError",
    "Definitions",
    "Role",
    "SagaData",
    "SagaDefinition",
    "Send",
    "Step",
    "StepKind",
]

SagaData = order.OrderCreated
"""What every step's command is built from: the order as created (the saga's context)."""

C = TypeVar("C", bound=Command)


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


class Role(StrEnum):
    """What a message type does in a saga: the tracker's and the timeline's labels."""

    ACTION = "action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATION = "compensation"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation failed"
    LOCK = "lock"


@dataclass(frozen=True, slots=True)
class Send(Generic[C]):
    """A command type and how to build it from the saga's data."""

    type: type[C]
    build: Callable[[SagaData], C]


@dataclass(frozen=True, slots=True)
class Undo(Generic[C]):
    """A compensating command type and how to build it from the saga's data and a reason."""

    type: type[C]
    build: Callable[[SagaData, str], C]


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of the saga, and what undoes it.

    Attributes:
        name: stable name, stored in saga state and shown in the API.
        module: the module that runs it; every message type below must be in
            that module's contract.
        kind: compensatable, pivot or retriable.
        action: the command that runs the step; None for the first step, which
            its module ran when it started the saga.
        succeeded: the reply that completes the step.
        failed: replies meaning the step did nothing and the saga must undo
            the steps before it (each carries a ``reason``).
        compensation: the command that undoes the step (compensatable steps).
        compensated: the reply that confirms the undo.
        compensation_failed: replies meaning the undo could not be done now (each
            carries a ``reason``); it is tried again with backoff, and the saga
            parks when the attempts are spent.
        lock: the pivot's semantic lock: a command to its module that stops the
            pivot from succeeding from then on, answered by one of ``failed``
            (locked: undo everything) or by ``succeeded`` (too late).
        timeout: seconds to wait for a reply before sending the command again
            (None: the ``--timeouts`` setting).
        attempts: how often a forward step is sent before the saga gives up
            and compensates (None: the setting). Compensations and retriable
            steps are sent until they succeed.
    """

    name: str
    module: str
    kind: StepKind
    action: Send[Command] | None
    succeeded: type[Event]
    failed: tuple[type[Failure], ...] = ()
    compensation: Undo[Command] | None = None
    compensated: type[Event] | None = None
    compensation_failed: tuple[type[Failure], ...] = ()
    lock: Undo[Command] | None = None
    timeout: float | None = None
    attempts: int | None = None

    def messages(self) -> Iterator[tuple[type[Message], Role]]:
        """Every message type of this step, with its role."""
        if self.action is not None:
            yield self.action.type, Role.ACTION
        yield self.succeeded, Role.SUCCEEDED
        for failed in self.failed:
            yield failed, Role.FAILED
        if self.compensation is not None:
            yield self.compensation.type, Role.COMPENSATION
        if self.compensated is not None:
            yield self.compensated, Role.COMPENSATED
        for failed in self.compensation_failed:
            yield failed, Role.COMPENSATION_FAILED
        if self.lock is not None:
            yield self.lock.type, Role.LOCK


class DefinitionError(ValueError):
    """A saga definition breaks a rule; the message names the step and the rule."""


@dataclass(frozen=True)
class SagaDefinition:
    """The steps of one version of a saga, in order."""

    name: str
    version: int
    steps: tuple[Step, ...]
    _by_name: dict[str, Step] = field(init=False, repr=False, compare=False)
    _roles: dict[str, tuple[Step, Role]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {step.name: step for step in self.steps})
        roles: dict[str, tuple[Step, Role]] = {}
        for step in self.steps:
            for message, role in step.messages():
                roles.setdefault(message.TYPE, (step, role))
        object.__setattr__(self, "_roles", roles)

    # -- the shape -------------------------------------------------------------

    @property
    def first(self) -> Step:
        return self.steps[0]

    @property
    def last(self) -> Step:
        return self.steps[-1]

    @property
    def pivot(self) -> Step:
        return next(step for step in self.steps if step.kind is StepKind.PIVOT)

    def step(self, name: str) -> Step:
        return self._by_name[name]

    def index(self, name: str) -> int:
        return self.steps.index(self._by_name[name])

    def after(self, step: Step) -> Step | None:
        """The step that runs when ``step`` succeeds; None after the last."""
        index = self.steps.index(step) + 1
        return self.steps[index] if index < len(self.steps) else None

    def undo_order(self, names: Collection[str]) -> tuple[str, ...]:
        """The compensations to run for the steps ``names``, last step first."""
        return tuple(
            step.name
            for step in reversed(self.steps)
            if step.name in names and step.compensation is not None
        )

    def undo_before(self, step: Step) -> Step | None:
        """The last compensatable step before ``step``: the first to undo when it fails."""
        index = self.steps.index(step)
        return next((s for s in reversed(self.steps[:index]) if s.compensation is not None), None)

    def role(self, type_name: str) -> tuple[Step, Role] | None:
        """Which step a message type belongs to, and what it does there."""
        return self._roles.get(type_name)

    @property
    def message_types(self) -> frozenset[str]:
        return frozenset(self._roles)

    # -- the rules ---------------------------------------------------------------

    def validate(self, contracts: Mapping[str, Collection[type[Message]]]) -> None:
        """Raise ``DefinitionError`` naming the step and the rule a definition breaks.

        ``contracts`` maps each module name to the messages of its contract.
        """
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise DefinitionError(f"step {step.name!r}: a step name is used twice")
            seen.add(step.name)
        pivots = [step for step in self.steps if step.kind is StepKind.PIVOT]
        if len(pivots) != 1:
            names = ", ".join(repr(p.name) for p in pivots) or "none"
            raise DefinitionError(
                f"saga {self.name!r} v{self.version}: exactly one step must be the pivot"
                f" (found {names})"
            )
        pivot_at = self.steps.index(pivots[0])
        types: dict[str, str] = {}
        for index, step in enumerate(self.steps):
            _check_kind(step, index, pivot_at)
            _check_shape(step, first=index == 0)
            _check_contract(step, contracts)
            for message, role in step.messages():
                owner = types.setdefault(message.TYPE, f"{step.name}:{role}")
                if owner != f"{step.name}:{role}":
                    raise DefinitionError(
                        f"step {step.name!r}: message type {message.TYPE} already plays"
                        f" another part ({owner}); each type may play one"
                    )


def _check_kind(step: Step, index: int, pivot_at: int) -> None:
    where = "before" if index < pivot_at else "after"
    if index < pivot_at and step.kind is not StepKind.COMPENSATABLE:
        raise DefinitionError(f"step {step.name!r}: a step {where} the pivot must be compensatable")
    if index > pivot_at and step.kind is not StepKind.RETRIABLE:
        raise DefinitionError(f"step {step.name!r}: a step {where} the pivot must be retriable")
    if step.kind is StepKind.COMPENSATABLE and (
        step.compensation is None or step.compensated is None
    ):
        raise DefinitionError(
            f"step {step.name!r}: a step before the pivot needs a compensation and its reply"
        )
    if step.kind is StepKind.RETRIABLE and step.failed:
        raise DefinitionError(f"step {step.name!r}: a step after the pivot may not fail")
    has_undo = step.compensation or step.compensated or step.compensation_failed
    if step.kind is not StepKind.COMPENSATABLE and has_undo:
        raise DefinitionError(
            f"step {step.name!r}: only a step before the pivot may have a compensation"
        )
    if step.kind is StepKind.PIVOT:
        if step.lock is None:
            raise DefinitionError(f"step {step.name!r}: the pivot needs a lock command")
        if not step.failed:
            raise DefinitionError(
                f"step {step.name!r}: the pivot needs a failure reply (what its lock answers)"
            )
    elif step.lock is not None:
        raise DefinitionError(f"step {step.name!r}: only the pivot takes a lock")


def _check_shape(step: Step, *, first: bool) -> None:
    if first and step.action is not None:
        raise DefinitionError(
            f"step {step.name!r}: the first step is run by its module when the saga starts,"
            " so it has no action"
        )
    if first and step.kind is not StepKind.COMPENSATABLE:
        raise DefinitionError(f"step {step.name!r}: the first step must be compensatable")
    if not first and step.action is None:
        raise DefinitionError(f"step {step.name!r}: every step but the first needs an action")
    for failed in (*step.failed, *step.compensation_failed):
        if not issubclass(failed, Failure):
            raise DefinitionError(
                f"step {step.name!r}: failure reply {failed.TYPE} must be a bus Failure"
                " (it carries a reason)"
            )
    if not first and step.compensated is not None and not issubclass(step.compensated, Compensated):
        raise DefinitionError(
            f"step {step.name!r}: compensation reply {step.compensated.TYPE} must be a bus"
            " Compensated (it passes the reason on)"
        )


def _check_contract(step: Step, contracts: Mapping[str, Collection[type[Message]]]) -> None:
    if step.module not in contracts:
        raise DefinitionError(f"step {step.name!r}: no module named {step.module!r}")
    contract = contracts[step.module]
    for message, role in step.messages():
        if message not in contract:
            raise DefinitionError(
                f"step {step.name!r}: {role} {message.TYPE} is not in the"
                f" {step.module!r} module's contract"
            )
        expected = Command if role in (Role.ACTION, Role.COMPENSATION, Role.LOCK) else Event
        if not issubclass(message, expected):
            raise DefinitionError(
                f"step {step.name!r}: {role} {message.TYPE} must be a {expected.__name__}"
            )


@dataclass(frozen=True)
class Definitions:
    """The definition new sagas start under, and the older ones kept for sagas in flight."""

    current: SagaDefinition
    older: tuple[SagaDefinition, ...] = ()

    def __post_init__(self) -> None:
        versions = [d.version for d in self.all]
        if len(set(versions)) != len(versions):
            raise DefinitionError(f"saga {self.current.name!r}: a version is defined twice")
        if any(d.version > self.current.version for d in self.older):
            raise DefinitionError(
                f"saga {self.current.name!r}: the current version must be the newest"
            )

    @property
    def all(self) -> tuple[SagaDefinition, ...]:
        return (self.current, *self.older)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(d.version for d in self.all)

    def get(self, version: int) -> SagaDefinition | None:
        if version == self.current.version:  # nearly every saga in flight
            return self.current
        return next((d for d in self.older if d.version == version), None)

    def version(self, version: int) -> SagaDefinition:
        definition = self.get(version)
        if definition is None:
            raise DefinitionError(f"saga {self.current.name!r} v{version} is not defined here")
        return definition

    def validate(self, contracts: Mapping[str, Collection[type[Message]]]) -> None:
        for definition in self.all:
            definition.validate(contracts)

    @property
    def message_types(self) -> frozenset[str]:
        return frozenset().union(*(d.message_types for d in self.all))
