"""The receiving side of a module: inbox deduplication, routing, retries and dead letters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio

from bus.chaos import ChaosPlan, InjectedFaultError
from bus.errors import BusError, MessageDecodeError, UnknownMessageTypeError
from bus.messages import (
    ENVELOPE_COLUMNS,
    Envelope,
    MessageRegistry,
    Undecodable,
    channel,
    envelope_from_row,
    envelope_row,
)
from bus.retry import RetryPolicy
from bus.sqlite import Database, Tx
from telemetry import logs, metrics, tracing

__all__ = ["Consumer", "Route"]

log = logging.getLogger(__name__)

Route = Callable[[Tx, Any], None]
"""A handler as the consumer calls it: runs inside the module's transaction."""

_OPEN = "('RETRYING', 'DEAD')"
_COLUMNS = ", ".join(ENVELOPE_COLUMNS)
_PARK = (
    f"INSERT OR IGNORE INTO dead_letter (consumer, {_COLUMNS}, status, error, attempts,"  # noqa: S608
    " first_failed_at, next_attempt_at, dead_at)"
    f" VALUES (?, {', '.join('?' for _ in ENVELOPE_COLUMNS)}, ?,?,?,?,?,?)"
)


class _WaitingBehindError(BusError):
    """An earlier message of the same order is parked: this one waits behind it."""


class Consumer:
    """Handles a subscription's batches against one module database.

    Each envelope is handled in its own savepoint of a group commit, together
    with its inbox row: the effect, the messages it emits and the record that
    it was processed commit or roll back as one, and a message seen before is
    skipped. A message whose handler fails is parked in the module's
    ``dead_letter`` table in that same transaction (so the transport can move
    on: other orders keep flowing) and retried from there with backoff while
    the error is transient; later messages of the same order wait behind it,
    which keeps each order's messages in sequence. Once the attempts are spent,
    or at once for an error that is not transient, it is DEAD until an operator
    replays or discards it.
    """

    def __init__(
        self,
        name: str,
        db: Database,
        routes: Mapping[str, Route],
        registry: MessageRegistry,
        *,
        observer: Callable[[Tx, Envelope], None] | None = None,
        observes: Collection[str] | None = None,
        witness: Callable[[Tx, Envelope], None] | None = None,
        dedupe: bool = True,
        policy: RetryPolicy | None = None,
        chaos: ChaosPlan | None = None,
        handler_timeout: float = 1.0,
    ) -> None:
        self.name = name
        self.db = db
        self.routes = dict(routes)
        self.registry = registry
        self.observer = observer
        self.observes = None if observes is None else sorted(observes)
        self.witness = witness
        self.dedupe = dedupe
        self.policy = policy or RetryPolicy()
        self.chaos = chaos
        self.handler_timeout = handler_timeout
        # Orders with an open parked message. Read and written only inside
        # jobs, which the database runs one at a time in its writer thread.
        self._blocked: set[str] = set()
        self._wakeup = anyio.Event()

    @property
    def types(self) -> list[str] | None:
        """The types to subscribe to: the routes', or an observer's (None: all of them)."""
        return self.observes if self.observer is not None else list(self.routes)

    # -- the subscription ------------------------------------------------------

    async def __call__(self, batch: Sequence[Envelope]) -> None:
        hung = await self._hang(batch)
        calls = [(partial(self._handle, env, env.message_id in hung), env) for env in batch]
        # One savepoint for the batch (each handler has its own inside): an error
        # that escapes one means the database failed, and the batch comes again.
        outcomes = await self.db.run_all(calls, atomic=True)
        failed = [o.error for o in outcomes if o.error is not None]
        if failed:
            # The transaction itself failed (not a handler): nothing of it
            # stands, so forget what it blocked and let the transport retry.
            await self.db.transact(self._load_blocked)
            raise failed[0]
        if not all(o.value for o in outcomes):
            self._wakeup.set()

    async def _hang(self, batch: Sequence[Envelope]) -> set[str]:
        """Chaos: some handlers hang; they are cut off after ``handler_timeout``."""
        if self.chaos is None:
            return set()
        hung = {e.message_id for e in batch if self.chaos.hits("hang", e)}
        if hung:
            with anyio.move_on_after(self.handler_timeout):
                await anyio.sleep(self.chaos.hang)
        return hung

    def _handle(self, envelope: Envelope, hung: bool, tx: Tx) -> bool:
        """Handle or park one envelope; True if it was handled (or was a duplicate)."""
        token = logs.MESSAGE.set((self.name, envelope))
        try:
            if not tracing.ENABLED:
                self._witness(envelope, tx)
                return self._handle_or_park(envelope, hung, tx)
            with self._traced(envelope, 1, tx):
                self._witness(envelope, tx)
                return self._handle_or_park(envelope, hung, tx)
        finally:
            logs.MESSAGE.reset(token)

    def _witness(self, envelope: Envelope, tx: Tx) -> None:
        """Show the witness every delivery, duplicates included, whatever its handler
        then does: before it (what the handler emits comes after its cause), and
        outside its savepoint (a parked message was still delivered). An error
        here fails the batch, which then comes again."""
        if self.witness is not None and not isinstance(envelope.message, Undecodable):
            self.witness(tx, envelope)

    @contextmanager
    def _traced(self, envelope: Envelope, attempt: int, tx: Tx) -> Iterator[None]:
        """A ``process`` span around one envelope; what it emits carries that span."""
        with tracing.processing(
            (envelope.traceparent, envelope.tracestate), destination=channel(envelope.message),
            message_type=envelope.type, message_id=envelope.message_id,
            order_id=envelope.correlation_id, consumer=self.name, attempt=attempt,
            compensation=envelope.message.COMPENSATION, partition=envelope.partition,
        ) as span:  # fmt: skip
            saved, tx.trace, tx.error = tx.trace, tracing.context_of(span), None
            try:
                yield
            finally:
                tx.trace = saved
            tracing.failed(span, tx.error)

    def _handle_or_park(self, envelope: Envelope, hung: bool, tx: Tx) -> bool:
        conn = tx.conn
        conn.execute("SAVEPOINT handler")
        try:
            if envelope.correlation_id in self._blocked:
                raise _WaitingBehindError(envelope.correlation_id)
            if hung:
                raise TimeoutError(f"handler for {envelope.type} hung")
            self._apply(envelope, 1, tx)
        except Exception as exc:  # noqa: BLE001 - the bus's delivery boundary: park, never drop
            conn.execute("ROLLBACK TO handler")
            conn.execute("RELEASE handler")
            tx.error = exc
            self._park(tx, envelope, exc)
            return False
        conn.execute("RELEASE handler")
        return True

    def _apply(self, envelope: Envelope, attempt: int, tx: Tx) -> None:
        # The inbox row first: if it exists, this is a duplicate and nothing else
        # runs. (An observer whose writes are keyed by message id needs none.)
        if self.dedupe:
            inserted = tx.execute(
                "INSERT OR IGNORE INTO inbox (consumer, message_id, processed_at) VALUES (?,?,?)",
                (self.name, envelope.message_id, tx.now),
            ).rowcount
            if not inserted:
                metrics.duplicate_dropped(self.name)
                return
        if isinstance(envelope.message, Undecodable):
            raise MessageDecodeError(envelope.type, envelope.version, envelope.message.error)
        if self.chaos is not None and self.chaos.hits("exception", envelope, attempt):
            raise InjectedFaultError(f"injected failure of {envelope.type} (attempt {attempt})")
        route = self.routes.get(envelope.type)
        if route is not None:
            route(tx, envelope.message)
        elif self.observer is not None:
            self.observer(tx, envelope)
        else:
            raise UnknownMessageTypeError(envelope.type)

    def _park(self, tx: Tx, envelope: Envelope, error: BaseException) -> None:
        behind = isinstance(error, _WaitingBehindError)
        retry = behind or (self.policy.is_transient(error) and self.policy.attempts > 1)
        if not behind:
            metrics.handler_failed(self.name)
            log.warning("consumer %s: %s %s of order %s failed, dead-lettered as %s: %r",
                        self.name, envelope.type, envelope.message_id, envelope.correlation_id,
                        "RETRYING" if retry else "DEAD", error)  # fmt: skip
        tx.execute(
            _PARK,
            (
                self.name, *envelope_row(envelope),
                "RETRYING" if retry else "DEAD", None if behind else repr(error),
                0 if behind else 1, tx.now,
                tx.now + (0.0 if behind else self.policy.delay(1)) if retry else None,
                None if retry else tx.now,
            ),
        )  # fmt: skip
        self._blocked.add(envelope.correlation_id)

    def _load_blocked(self, tx: Tx) -> None:
        self._blocked = {
            key
            for (key,) in tx.execute(
                f"SELECT DISTINCT correlation_id FROM dead_letter WHERE consumer = ?"  # noqa: S608
                f" AND status IN {_OPEN}",
                (self.name,),
            )
        }

    # -- retries ---------------------------------------------------------------

    async def run(self) -> None:
        """Retry parked messages when they are due, until cancelled."""
        await self.db.transact(self._load_blocked)
        while True:
            next_due = await self.db.transact(self._retry_due)
            self._wakeup = anyio.Event()
            if next_due is None:
                await self._wakeup.wait()
            else:
                with anyio.move_on_after(max(0.0, next_due - self.db.clock())):
                    await self._wakeup.wait()

    def _retry_due(self, tx: Tx) -> float | None:
        """Retry every order's first parked message that is due; return the next due time."""
        heads = tx.execute(
            f"SELECT id, status, attempts, next_attempt_at, {_COLUMNS} FROM dead_letter d"  # noqa: S608
            f" WHERE consumer = ? AND status IN {_OPEN} AND id = (SELECT min(id) FROM dead_letter"
            f" WHERE consumer = d.consumer AND correlation_id = d.correlation_id"
            f" AND status IN {_OPEN}) ORDER BY id",
            (self.name,),
        ).fetchall()
        next_due: float | None = None
        for row_id, status, attempts, due, *fields in heads:
            if status != "RETRYING":
                continue
            if due > tx.now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            # Handled: the next message of this order may go now; else its next try.
            due = self._retry(tx, row_id, attempts + 1, fields)
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _retry(self, tx: Tx, row_id: int, attempt: int, fields: list[Any]) -> float | None:
        """One more attempt; return when this order's parked messages are next due."""
        envelope = envelope_from_row(fields, self.registry)
        token = logs.MESSAGE.set((self.name, envelope))
        try:
            if not tracing.ENABLED:
                return self._retry_once(tx, row_id, attempt, envelope)
            with self._traced(envelope, attempt, tx):
                return self._retry_once(tx, row_id, attempt, envelope)
        finally:
            logs.MESSAGE.reset(token)

    def _retry_once(self, tx: Tx, row_id: int, attempt: int, envelope: Envelope) -> float | None:
        conn = tx.conn
        conn.execute("SAVEPOINT retry")
        try:
            tx.cause, tx.context = envelope, envelope.context
            self._apply(envelope, attempt, tx)
        except Exception as exc:  # noqa: BLE001 - the bus's delivery boundary
            conn.execute("ROLLBACK TO retry")
            conn.execute("RELEASE retry")
            tx.error = exc
            metrics.handler_failed(self.name)
            dead = attempt >= self.policy.attempts or not self.policy.is_transient(exc)
            due = None if dead else tx.now + self.policy.delay(attempt)
            tx.execute(
                "UPDATE dead_letter SET status = ?, error = ?, attempts = ?, next_attempt_at = ?,"
                " dead_at = ? WHERE id = ?",
                (
                    "DEAD" if dead else "RETRYING", repr(exc), attempt, due,
                    tx.now if dead else None, row_id,
                ),
            )  # fmt: skip
            if dead:
                log.error("consumer %s: message %s of order %s is dead after %d attempts: %r",
                          self.name, envelope.message_id, envelope.correlation_id, attempt,
                          exc)  # fmt: skip
            return due
        finally:
            tx.cause = tx.context = None
        conn.execute("RELEASE retry")
        self._resolve(tx, row_id, "DELIVERED", envelope.correlation_id)
        return tx.now

    def _resolve(self, tx: Tx, row_id: int, status: str, key: str) -> None:
        tx.execute(
            "UPDATE dead_letter SET status = ?, resolved_at = ?, next_attempt_at = NULL"
            " WHERE id = ?",
            (status, tx.now, row_id),
        )
        still_open = tx.one(
            f"SELECT 1 FROM dead_letter WHERE consumer = ? AND correlation_id = ?"  # noqa: S608
            f" AND status IN {_OPEN} LIMIT 1",
            (self.name, key),
        )
        if still_open is None:
            self._blocked.discard(key)

    # -- operator actions ------------------------------------------------------

    async def replay(self, row_id: int) -> str | None:
        """Try a DEAD message once more (it goes DEAD again if that attempt fails too).

        A no-op for a message that is not DEAD. Returns the message's status after
        the call (None if there is no such message).
        """

        def replay(tx: Tx) -> str | None:
            row = tx.one("SELECT status FROM dead_letter WHERE id = ? AND consumer = ?",
                         (row_id, self.name))  # fmt: skip
            if row is None or row[0] != "DEAD":
                return None if row is None else str(row[0])
            tx.execute(
                "UPDATE dead_letter SET status = 'RETRYING', next_attempt_at = ?,"
                " dead_at = NULL WHERE id = ?",
                (tx.now, row_id),
            )
            return "RETRYING"

        status = await self.db.transact(replay)
        self._wakeup.set()
        return status

    async def discard(self, row_id: int) -> str | None:
        """Give up on a parked message for good; a no-op once resolved. Returns its status."""

        def discard(tx: Tx) -> str | None:
            row = tx.one(
                "SELECT status, correlation_id FROM dead_letter WHERE id = ? AND consumer = ?",
                (row_id, self.name),
            )
            if row is None or row[0] not in ("RETRYING", "DEAD"):
                return None if row is None else str(row[0])
            self._resolve(tx, row_id, "DISCARDED", row[1])
            return "DISCARDED"

        status = await self.db.transact(discard)
        self._wakeup.set()
        return status
