"""The outbox relay: hands committed outbox rows to the transport and marks them
dispatched once the transport has them durably."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio

from bus.faults import point_names
from bus.messages import ENVELOPE_COLUMNS, Envelope, MessageRegistry, channel, envelope_from_row
from bus.ports import Transport
from bus.sqlite import Database, Tx
from telemetry import metrics, tracing

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)

# How long "dispatched" marks may wait for another commit to ride with. A mark
# only spares a redelivery after a crash (the consumers drop duplicates), so it
# need not cost a commit of its own: under load it rides with the next one.
MARK_LINGER = 0.2


class OutboxRelay:
    """Publishes a database's outbox, in commit order.

    New rows are handed over right after their commit (no polling). Rows left
    undispatched by a crash are published again by ``recover`` at start-up,
    before anything new; consumers drop the duplicates through their inbox.
    """

    def __init__(self, db: Database, transport: Transport, registry: MessageRegistry) -> None:
        self.db = db
        self.transport = transport
        self.registry = registry
        self._delivered: list[int] = []
        self._mark_queued = False
        self._waiters: dict[str, anyio.Event] = {}
        # Published, not yet delivered: message id -> when it was published.
        self._in_flight: dict[str, float] = {}
        self._lock = threading.Lock()
        db.commit_hooks.append(self.publish)
        db.wait_delivered = self.wait_delivered

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        now = time.perf_counter()
        self._in_flight.update((envelope.message_id, now) for envelope in envelopes)
        self.transport.publish(envelopes, self._on_delivered)
        if tracing.ENABLED:
            self._trace_published(envelopes)
        if self.db.crash_points is not None:
            types = (envelope.type for envelope in envelopes)
            self.db.crash_points.reached(*point_names("after-publish", self.db.name, types))

    def _on_delivered(self, envelopes: Sequence[Envelope]) -> None:
        seqs = [envelope.seq for envelope in envelopes]
        # The list is swapped out by _mark_dispatched in the writer thread.
        with self._lock:
            self._delivered.extend(seqs)
            submit, self._mark_queued = not self._mark_queued, True
        if submit:
            self.db.submit(self._mark_dispatched, linger=MARK_LINGER)
        now = time.perf_counter()
        latencies = []
        for envelope in envelopes:
            published = self._in_flight.pop(envelope.message_id, None)
            if published is not None:
                latencies.append(now - published)
            waiter = self._waiters.pop(envelope.message_id, None)
            if waiter is not None:
                waiter.set()
        metrics.relayed(self.db.name, latencies)

    def _mark_dispatched(self, tx: Tx) -> None:
        # Runs as part of a later group commit (at most MARK_LINGER s later). If
        # that commit fails or never comes (a crash), these rows stay undispatched
        # until the next start-up publishes them again; consumers drop the duplicates.
        with self._lock:
            seqs, self._delivered = self._delivered, []
            self._mark_queued = False
        tx.conn.executemany(
            "UPDATE outbox SET dispatched_at = ? WHERE seq = ?", [(tx.now, seq) for seq in seqs]
        )

    async def wait_delivered(self, envelopes: Sequence[Envelope], limit: float) -> bool:
        """Wait until the transport has every envelope durably; ``False`` after ``limit`` s."""
        events = [
            self._waiters.setdefault(envelope.message_id, anyio.Event())
            for envelope in envelopes
            if envelope.message_id in self._in_flight
        ]
        with anyio.move_on_after(limit):
            for event in events:
                await event.wait()
            return True
        return False

    async def recover(self) -> int:
        """Publish every row a previous run left undispatched; return how many."""

        def load(tx: Tx) -> list[Any]:
            return tx.execute(
                f"SELECT seq, {', '.join(ENVELOPE_COLUMNS)} FROM outbox"  # noqa: S608 - constant
                " WHERE dispatched_at IS NULL ORDER BY seq"
            ).fetchall()

        # A row this build cannot read is still delivered, as Undecodable:
        # its consumers park it as a dead letter where an operator sees it.
        envelopes = [
            envelope_from_row(row, self.registry, seq=seq)
            for seq, *row in await self.db.transact(load)
        ]
        if envelopes:
            log.info("relay %s: publishing %d undispatched messages", self.db.name, len(envelopes))
            self.publish(envelopes)
            if self.db.crash_points is not None:
                self.db.crash_points.reached(f"recovered:{self.db.name}")
        return len(envelopes)

    def _trace_published(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            tracing.message_published(
                (envelope.traceparent, envelope.tracestate), destination=channel(envelope.message),
                message_type=envelope.type, message_id=envelope.message_id,
                order_id=envelope.correlation_id, module=self.db.name,
                compensation=envelope.message.COMPENSATION,
            )  # fmt: skip
