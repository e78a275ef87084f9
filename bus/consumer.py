"""The receiving side of a module: inbox deduplication, routing, retries and dead letters."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import msgspec

from bus.errors import MessageDecodeError, UnknownMessageTypeError
from bus.messages import Envelope
from bus.sqlite import Database, Tx

__all__ = ["Consumer", "Route"]

log = logging.getLogger(__name__)

Route = Callable[[Tx, Any], None]
"""A handler as the consumer calls it: runs inside the module's transaction."""

_PERMANENT = (MessageDecodeError, UnknownMessageTypeError, msgspec.ValidationError)


class Consumer:
    """Handles a subscription's batches against one module database.

    Each envelope is handled in its own savepoint of a group commit, together
    with its inbox row: the effect, the messages it emits and the record that
    it was processed commit or roll back as one. A message seen before (same
    consumer, same message id) is skipped, so redelivery has no second effect.
    A failing envelope is retried with exponential backoff; after
    ``max_attempts`` (or at once, if it cannot be decoded or routed) it is
    parked in the dead-letter table and the batch moves on.
    """

    def __init__(
        self,
        name: str,
        db: Database,
        routes: Mapping[str, Route],
        *,
        observer: Callable[[Tx, Envelope], None] | None = None,
        dedupe: bool = True,
        max_attempts: int = 5,
        retry_delay: float = 0.02,
    ) -> None:
        self.name = name
        self.db = db
        self.routes = dict(routes)
        self.observer = observer
        self.dedupe = dedupe
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay

    @property
    def types(self) -> list[str] | None:
        """The types to subscribe to; None (all of them) for an observer."""
        return None if self.observer is not None else list(self.routes)

    async def __call__(self, batch: Sequence[Envelope]) -> None:
        outcomes = await self.db.run_all([(partial(self._handle, env), env) for env in batch])
        for envelope, outcome in zip(batch, outcomes, strict=True):
            if outcome.error is not None:
                await self._retry(envelope, outcome.error)

    def _handle(self, envelope: Envelope, tx: Tx) -> None:
        # The inbox row first: if it exists, this is a duplicate and nothing else
        # runs. (An observer whose writes are keyed by message id needs none.)
        if self.dedupe:
            inserted = tx.execute(
                "INSERT OR IGNORE INTO inbox (consumer, message_id, processed_at) VALUES (?,?,?)",
                (self.name, envelope.message_id, tx.now),
            ).rowcount
            if not inserted:
                return
        route = self.routes.get(envelope.type)
        if route is not None:
            route(tx, envelope.message)
        elif self.observer is not None:
            self.observer(tx, envelope)
        else:
            raise UnknownMessageTypeError(envelope.type)

    async def _retry(self, envelope: Envelope, error: BaseException) -> None:
        attempts = 1
        first_failed_at = self.db.clock()
        while not isinstance(error, _PERMANENT) and attempts < self.max_attempts:
            await anyio.sleep(self.retry_delay * math.pow(2, attempts - 1))
            attempts += 1
            try:
                await self.db.transact(partial(self._handle, envelope), cause=envelope)
            except Exception as exc:  # noqa: BLE001 - the bus's delivery boundary
                error = exc
            else:
                return
        log.error(
            "consumer %s: %s %s dead-lettered after %d attempts: %r",
            self.name,
            envelope.type,
            envelope.message_id,
            attempts,
            error,
        )
        await self.db.transact(
            partial(_park, self.name, envelope, error, attempts, first_failed_at)
        )


def _park(
    consumer: str, envelope: Envelope, error: BaseException, attempts: int, first: float, tx: Tx
) -> None:
    row: tuple[Any, ...] = (
        consumer,
        envelope.message_id,
        envelope.type,
        envelope.version,
        envelope.correlation_id,
        envelope.causation_id,
        envelope.source,
        envelope.occurred_at,
        envelope.payload,
        envelope.context,
        repr(error),
        attempts,
        first,
        tx.now,
    )
    tx.execute(
        "INSERT INTO dead_letter (consumer, message_id, type, version, correlation_id,"
        " causation_id, source, occurred_at, payload, context, error, attempts,"
        " first_failed_at, dead_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        row,
    )
