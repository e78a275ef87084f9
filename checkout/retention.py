"""Retention of finished sagas: their tracker history and orchestrator state.

A saga that ended (COMPLETED or COMPENSATED) is kept, timeline and all, for
``keep_finished`` after its end, then pruned. A saga in flight (RUNNING,
COMPENSATING, PARKED) is never pruned, however old.
"""

from __future__ import annotations

from bus.sqlite import Tx
from checkout.db import FINISHED

__all__ = ["prune_finished_sagas", "prune_finished_timelines"]


# INDEXED BY: on a small or unanalysed table the planner would take the status
# index and sort every finished saga for each batch.


def prune_finished_timelines(tx: Tx, cutoff: float, limit: int) -> int:
    """Delete up to ``limit`` tracked sagas finished before ``cutoff``, and their timelines."""
    ids = [
        row[0]
        for row in tx.execute(
            "SELECT saga_id FROM tracked_sagas INDEXED BY tracked_sagas_finished"  # noqa: S608
            f" WHERE {FINISHED} AND updated_at < ?"
            " ORDER BY updated_at LIMIT ?",
            (cutoff, limit),
        )
    ]
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    tx.execute(f"DELETE FROM timeline WHERE saga_id IN ({marks})", ids)  # noqa: S608
    return tx.execute(f"DELETE FROM tracked_sagas WHERE saga_id IN ({marks})", ids).rowcount  # noqa: S608


def prune_finished_sagas(tx: Tx, cutoff: float, limit: int) -> int:
    """Delete up to ``limit`` orchestrator saga rows that finished before ``cutoff``."""
    return tx.execute(
        "DELETE FROM sagas WHERE saga_id IN (SELECT saga_id FROM sagas INDEXED BY sagas_finished"  # noqa: S608
        f" WHERE {FINISHED}"
        " AND updated_at < ? ORDER BY updated_at LIMIT ?)",
        (cutoff, limit),
    ).rowcount
