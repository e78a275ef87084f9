"""Which saga mode a data directory runs in, and when it may change."""

from __future__ import annotations

from bus.sqlite import Tx

__all__ = ["SagaModeConflictError", "claim_mode"]

MODES = ("orchestration", "choreography")


class SagaModeConflictError(Exception):
    """Raised at start when the saga mode changes while sagas of the old mode are in flight."""


def claim_mode(tx: Tx, mode: str) -> str | None:
    """Record ``mode`` for this data directory; return the previous mode if it changed.

    Switching is allowed only when every saga has finished: an in-flight saga
    is never handed to the other mode halfway (its orchestrator state or its
    choreography context would be ignored), so the start is refused instead.
    """
    if mode not in MODES:
        raise ValueError(f"unknown saga mode {mode!r}")
    row = tx.one("SELECT value FROM system_settings WHERE key = 'saga_mode'")
    previous = None if row is None else str(row[0])
    if previous is not None and previous != mode:
        (orchestrated,) = tx.one(
            "SELECT count(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED')"
        ) or (0,)
        (tracked,) = tx.one(
            "SELECT count(*) FROM tracked_sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED')"
        ) or (0,)
        if orchestrated or tracked:
            raise SagaModeConflictError(
                f"this data directory runs in {previous} mode and {max(orchestrated, tracked)}"
                f" saga(s) begun in it are still in flight; restart with --saga {previous}"
                f" until they finish, then switch to {mode}"
            )
    tx.execute(
        "INSERT INTO system_settings (key, value) VALUES ('saga_mode', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (mode,),
    )
    return previous if previous != mode else None
