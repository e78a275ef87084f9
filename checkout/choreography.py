"""Choreography: no coordinator, each module reacts to the others' events.

The reactions are derived from the saga definition, for every version kept:

- a step's success → the next step's action, run by the next step's module;
- a step's failure → the compensation of the last compensatable step before
  it (so, for the pivot's failure, everything before the pivot);
- a step's undo → the undo of the compensatable step before it, down to the
  first step, whose undo ends the saga.

Each reaction runs in the subscription of the module that reacts, inside that
module's own transaction, and calls the very handler that the orchestrator's
command would reach: only the wiring differs between the two styles. An abort
(operator, timeout, deadline) or a customer's cancellation takes the pivot's
lock; the lock's answer is the pivot's failure, and the undo chain follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bus.consumer import Route
from bus.messages import Command, Compensated, Failure, Message
from bus.sqlite import Tx
from checkout.context import decode_context, encode_context
from checkout.definition import Definitions, SagaData, SagaDefinition, Step

__all__ = ["Choreography", "reactions_of"]

Reaction = Callable[[Message, SagaData], Command]
Reactions = Mapping[str, tuple[str, Reaction]]
"""event type -> (the module that reacts, the command it runs)."""


def _forward(step: Step) -> Reaction:
    action = step.action
    assert action is not None
    return lambda _event, data: action.build(data)


def _undo(step: Step, reason: Callable[[Message], str]) -> Reaction:
    compensation = step.compensation
    assert compensation is not None
    return lambda event, data: compensation.build(data, reason(event))


def _failure_of(step: Step, pivot: Step) -> Callable[[Message], str]:
    def reason(event: Message) -> str:
        assert isinstance(event, Failure)
        # The pivot fails because its lock was taken: the lock's reason says why.
        return event.reason if step is pivot else f"{step.name} failed: {event.reason}"

    return reason


def _passed_on(event: Message) -> str:
    assert isinstance(event, Compensated)
    return event.reason or "compensated"


def reactions_of(definition: SagaDefinition) -> dict[str, tuple[str, Reaction]]:
    """The whole choreographed flow of one definition version."""
    table: dict[str, tuple[str, Reaction]] = {}
    for step in definition.steps:
        following = definition.after(step)
        if following is not None:
            table[step.succeeded.TYPE] = (following.module, _forward(following))
        undo = definition.undo_before(step)
        if undo is None:
            continue
        for failed in step.failed:
            table[failed.TYPE] = (undo.module, _undo(undo, _failure_of(step, definition.pivot)))
        if step.compensated is not None:
            table[step.compensated.TYPE] = (undo.module, _undo(undo, _passed_on))
    return table


class Choreography:
    """The reactions of every kept definition version, and the saga context they carry."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.tables = {d.version: reactions_of(d) for d in definitions.all}
        self.start_type = definitions.current.first.succeeded.TYPE

    def routes(self, module: str, commands: Mapping[str, Route]) -> dict[str, Route]:
        """The routes through which ``module`` reacts to other modules' events."""
        types = {
            event_type
            for table in self.tables.values()
            for event_type, (reacting, _) in table.items()
            if reacting == module
        }

        def route(tx: Tx, event: Message) -> None:
            if tx.context is None:
                return  # an orchestrated saga's event: not ours to react to
            version, data = decode_context(tx.context)
            entry = self.tables[self.definitions.version(version).version].get(event.TYPE)
            if entry is not None and entry[0] == module:
                command = entry[1](event, data)
                commands[command.TYPE](tx, command)

        return dict.fromkeys(types, route)

    def context_for(self, tx: Tx, message: Message, payload: bytes) -> bytes | None:
        """The context of a saga message emitted outside any handler (an HTTP request).

        The saga's first event starts the context, under the current version;
        a later one (a customer's cancellation) carries on the context of the
        last message this module emitted for the same saga.
        """
        if self.start_type == message.TYPE:
            return encode_context(self.definitions.current.version, payload)
        if message.KEY != "order_id":
            return None
        row = tx.one(
            "SELECT context FROM outbox WHERE correlation_id = ? AND context IS NOT NULL"
            " ORDER BY seq DESC LIMIT 1",
            (message.key,),
        )
        return None if row is None else bytes(row[0])
