"""Retention: what a module's database forgets once nothing can need it any more.

The outbox and the inbox exist for deduplication and redelivery. A dispatched
outbox row is needed only while its message could be published again (it never
is, once dispatched) or read as a saga's context; an inbox id is needed only
while the same message could arrive again. Both become dead weight after the
*dedup window*, which must be longer than any delay after which a message can
still be redelivered: a consumer group's replay from Kafka (up to the topics'
``retention.ms``), a relay publishing again after a long outage, a dead letter
replayed by an operator. A message redelivered after its inbox id was pruned
would be handled twice, so the window is the product's promise of
exactly-once effects in time; the default (7 days) is a week more than any of
those delays in this system (the Kafka topics this app creates keep 3 days).

Pruning runs in the background, one supervised task per module database, in
small batches (``batch`` rows per transaction), each one job through the
group-commit writer: a batch costs the writer about a millisecond, and
writers' jobs queued meanwhile ride in the same commit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import anyio.lowlevel

from bus.sqlite import Database, Tx

__all__ = [
    "Pruner",
    "Retention",
    "RetentionTask",
    "parse_duration",
    "prune_inbox",
    "prune_outbox",
]

log = logging.getLogger(__name__)

DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")

# (tx, cutoff, limit) -> rows deleted: delete up to ``limit`` rows older than ``cutoff``.
Pruner = Callable[[Tx, float, int], int]


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` or a number of seconds, as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 7d, 12h, 30m, 45s)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def prune_outbox(tx: Tx, cutoff: float, limit: int) -> int:
    """Delete up to ``limit`` outbox rows dispatched before ``cutoff`` (never undispatched ones)."""
    return tx.execute(
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
        " WHERE dispatched_at IS NOT NULL AND dispatched_at < ? ORDER BY dispatched_at LIMIT ?)",
        (cutoff, limit),
    ).rowcount


def prune_inbox(tx: Tx, cutoff: float, limit: int) -> int:
    """Delete up to ``limit`` inbox ids processed before ``cutoff``."""
    return tx.execute(
        "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id"
        " FROM inbox WHERE processed_at < ? ORDER BY processed_at LIMIT ?)",
        (cutoff, limit),
    ).rowcount


def _call(pruner: Pruner, cutoff: float, limit: int, tx: Tx) -> int:
    return pruner(tx, cutoff, limit)


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept, and how the pruning paces itself."""

    dedup_window: float = 7 * DAY
    keep_finished: float = 30 * DAY
    batch: int = 500
    interval: float = 60.0

    def __post_init__(self) -> None:
        if self.dedup_window <= 0 or self.batch <= 0 or self.interval <= 0:
            raise ValueError("retention durations, batch and interval must be positive")
        if self.keep_finished < self.dedup_window:
            # The tracker deduplicates by its timeline rows: a finished saga's
            # timeline must outlive any redelivery of its messages.
            raise ValueError("finished sagas must be kept at least as long as the dedup window")


@dataclass
class RetentionTask:
    """The background pruning of one module database.

    ``pruners`` are (name, pruner, age): rows older than ``age`` seconds go.
    ``pruned`` counts the rows each pruner deleted since start.
    """

    db: Database
    retention: Retention
    pruners: Sequence[tuple[str, Pruner, float]]
    pruned: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_bus(
        cls, db: Database, retention: Retention, extra: Sequence[tuple[str, Pruner, float]] = ()
    ) -> RetentionTask:
        window = retention.dedup_window
        return cls(
            db,
            retention,
            [("outbox", prune_outbox, window), ("inbox", prune_inbox, window), *extra],
        )

    async def prune_once(self) -> dict[str, int]:
        """Prune everything due now, one batch per transaction; return rows deleted per pruner."""
        deleted: dict[str, int] = {}
        for name, pruner, age in self.pruners:
            deleted[name] = 0
            while True:
                cutoff = self.db.clock() - age
                count = await self.db.transact(partial(_call, pruner, cutoff, self.retention.batch))
                deleted[name] += count
                if count < self.retention.batch:
                    break
                await anyio.lowlevel.checkpoint()  # let other work run between batches
            self.pruned[name] = self.pruned.get(name, 0) + deleted[name]
        if any(deleted.values()):
            log.info("retention %s: pruned %s", self.db.name, deleted)
        return deleted

    async def run(self) -> None:
        while True:
            await self.prune_once()
            await anyio.sleep(self.retention.interval)
