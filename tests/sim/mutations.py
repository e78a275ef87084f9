"""Bugs put back on purpose, to show that the simulation finds them.

Each mutation is switched on by name (``./dev sim --mutations relay-race``) and
lives here, in test code, as a variant of the part it breaks; production code
has no switch for any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Sequence
from functools import partial
from typing import Any

from bus.consumer import Consumer
from bus.messages import Envelope
from bus.relay import OutboxRelay
from bus.sqlite import Database, Tx
from checkout.context import decode_context
from checkout.definition import SagaDefinition, Step
from tests.sim.harness import SimConfig, SimResult, Simulation

__all__ = ["MUTATIONS", "simulation_for"]

MUTATIONS = {
    "relay-race": "the relay's dispatched bookkeeping without its lock (before c541796):"
    " a delivery acknowledged while the writer swaps the list is never marked dispatched",
    "skip-inbox": "consumers do not record nor check the message ids they handled",
    "emit-before-commit": "a transaction's messages are published before its COMMIT",
    "compensate-wrong-order": "compensations run first step first (orchestration), or each"
    " failure undoes the first step instead of the one before it (choreography)",
    "choreography-abort": "the choreography watchdog's abort undoes the shipment directly"
    " instead of taking the pivot's lock (the bug e67e437 fixed): a scheduled shipment is"
    " cancelled, stock released and money refunded while the order completes",
}


def _run_inline(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine that never suspends (everything is direct in the simulation)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("a simulated step suspended")


class RacyRelay(OutboxRelay):
    """The relay as it was before c541796: ``_on_delivered`` (event loop thread) and
    ``_mark_dispatched`` (the database's writer thread) share ``_delivered`` and
    ``_mark_queued`` without a lock. The simulation runs the event loop's side in
    the window between the writer's two statements, when its scheduler says so."""

    def __init__(self, sim: RelayRaceSimulation, db: Database) -> None:
        super().__init__(db, sim.transport, sim.system.registry)
        self.sim = sim

    def _on_delivered(self, envelopes: Sequence[Envelope]) -> None:
        self._delivered.extend(envelope.seq for envelope in envelopes)
        for envelope in envelopes:
            self._in_flight.pop(envelope.message_id, None)
            waiter = self._waiters.pop(envelope.message_id, None)
            if waiter is not None:
                waiter.set()
        if not self._mark_queued:
            self._mark_queued = True
            self.db.submit(self._mark_dispatched)

    def _mark_dispatched(self, tx: Tx) -> None:
        seqs, self._delivered = self._delivered, []
        self.sim.race_window(self.db)  # the other thread runs here
        self._mark_queued = False
        tx.conn.executemany(
            "UPDATE outbox SET dispatched_at = ? WHERE seq = ?", [(tx.now, seq) for seq in seqs]
        )


class RelayRaceSimulation(Simulation):
    in_window = False

    def make_relay(self, db: Database) -> OutboxRelay:
        return RacyRelay(self, db)

    def race_window(self, writing: Database) -> None:
        """Sometimes, deliver a batch to another module while ``writing`` is mid-job."""
        if self.in_window:
            return  # one thread interleaves with one writer at a time here
        others = [
            sub
            for sub in self.transport.busy()
            if isinstance(sub.handler, Consumer) and sub.handler.db is not writing
        ]
        if not others or self.rng.random() < 0.2:
            return
        # Preferably a delivery that acknowledges one of the writer's own messages.
        own = [sub for sub in others if sub.heads(writing.name)]
        sub = self.rng.choice(own or others)
        saved, self.crash_budget = self.crash_budget, 0  # no crash inside another's commit
        self.in_window = True
        try:
            _run_inline(
                self.transport.deliver(
                    sub, self.rng, max_batch=self.max_batch, redeliver=0.0, source=writing.name
                )
            )
        finally:
            self.crash_budget = saved
            self.in_window = False


class SkipInboxSimulation(Simulation):
    def make_consumer(self, old: Consumer) -> Consumer:
        consumer = super().make_consumer(old)
        consumer.dedupe = False
        return consumer


class EmitBeforeCommitSimulation(Simulation):
    """Every job's messages go to the transport as soon as the job returns, before the
    batch's COMMIT (and so even when the COMMIT never happens)."""

    def __init__(self, config: SimConfig, data_dir: Any) -> None:
        super().__init__(config, data_dir)
        for name, db in self.dbs.items():
            self._publish_early(name, db)

    def _publish_early(self, name: str, db: Database) -> None:
        run_batch = db._run_batch

        def early(batch: list[Any]) -> list[Envelope]:
            for group in batch:
                for job in group.jobs:
                    job.fn = self._publishing(name, job.fn)
            run_batch(batch)
            return []  # already published: the commit hooks get nothing

        db._run_batch = early  # type: ignore[method-assign]

    def _publishing(self, name: str, fn: Callable[[Tx], Any]) -> Callable[[Tx], Any]:
        def job(tx: Tx) -> Any:
            result = fn(tx)
            if tx.emitted:
                self.relays[name].publish(list(tx.emitted))
            return result

        return job


def _first_step_first(self: SagaDefinition, names: Collection[str]) -> tuple[str, ...]:
    return tuple(s.name for s in self.steps if s.name in names and s.compensation is not None)


def _first_compensatable(self: SagaDefinition, step: Step) -> Step | None:
    index = self.steps.index(step)
    return next((s for s in self.steps[:index] if s.compensation is not None), None)


class WrongOrderSimulation(Simulation):
    """The definition's undo order reversed, for as long as the run lasts (both styles
    read it: the orchestrator at every decision, the choreography when it is built)."""

    def __init__(self, config: SimConfig, data_dir: Any) -> None:
        self._saved = (SagaDefinition.undo_order, SagaDefinition.undo_before)
        SagaDefinition.undo_order = _first_step_first  # type: ignore[method-assign]
        SagaDefinition.undo_before = _first_compensatable  # type: ignore[method-assign]
        try:
            super().__init__(config, data_dir)
        except BaseException:
            self._restore()
            raise

    def _restore(self) -> None:
        SagaDefinition.undo_order, SagaDefinition.undo_before = self._saved  # type: ignore[method-assign]

    async def run(self) -> SimResult:
        try:
            return await super().run()
        finally:
            self._restore()


class ChoreographyAbortSimulation(Simulation):
    """The watchdog's abort (operator, timeout, deadline) undoes the last step before
    the pivot directly, without taking the pivot's lock."""

    def __init__(self, config: SimConfig, data_dir: Any) -> None:
        super().__init__(config, data_dir)
        assert self.system.checkout is not None
        task = self.system.checkout.background.get("saga-watchdog")
        if task is None:
            return  # orchestration: there is no watchdog
        assert isinstance(task, partial), task
        watchdog = task.args[1].__self__  # the watchdog whose fire_due the loop runs

        def abort(tx: Tx, saga_id: str, definition: SagaDefinition, reason: str) -> None:
            row = tx.one(
                "SELECT context FROM timeline WHERE saga_id = ? AND context IS NOT NULL LIMIT 1",
                (saga_id,),
            )
            last = definition.undo_before(definition.pivot)
            if row is None or last is None or last.compensation is None:
                return
            context = bytes(row[0])
            data = decode_context(context)[1]
            tx.emit(last.compensation.build(data, reason), context=context)
            watchdog._rearm(tx, saga_id, 1, "COMPENSATING")

        watchdog._abort = abort


_VARIANTS: dict[str, type[Simulation]] = {
    "relay-race": RelayRaceSimulation,
    "skip-inbox": SkipInboxSimulation,
    "emit-before-commit": EmitBeforeCommitSimulation,
    "compensate-wrong-order": WrongOrderSimulation,
    "choreography-abort": ChoreographyAbortSimulation,
}


def simulation_for(mutations: frozenset[str]) -> type[Simulation]:
    """The simulation with these bugs put back (one at a time, or none)."""
    if not mutations:
        return Simulation
    if len(mutations) > 1:
        raise ValueError("put back one mutation at a time")
    (name,) = mutations
    return _VARIANTS[name]
