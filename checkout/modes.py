"""Which saga mode a data directory runs in, and which definition versions it still needs."""

from __future__ import annotations

from bus.sqlite import Tx
from checkout.definition import Definitions

__all__ = ["MissingDefinitionError", "SagaModeConflictError", "check_versions", "claim_mode"]

MODES = ("orchestration", "choreography")


class SagaModeConflictError(Exception):
    """Raised at start when the saga mode changes while sagas of the old mode are in flight."""


class MissingDefinitionError(Exception):
    """Raised at start when sagas in flight run a definition version this build lacks."""


def check_versions(tx: Tx, definitions: Definitions) -> None:
    """Refuse to start without the definition of a version that still has sagas in flight.

    A saga finishes under the version it started with; the code must keep that
    version's definition (``Definitions.older``) until none is left.
    """
    waiting: dict[int, int] = {}
    for table in ("sagas", "tracked_sagas"):
        for version, count in tx.execute(
            f"SELECT coalesce(definition_version, 1), count(*) FROM {table}"  # noqa: S608
            " WHERE status NOT IN ('COMPLETED', 'COMPENSATED') GROUP BY 1"
        ):
            waiting[version] = max(waiting.get(version, 0), count)
    missing = sorted(v for v in waiting if definitions.get(v) is None)
    if missing:
        raise MissingDefinitionError(
            "; ".join(
                f"{waiting[v]} saga(s) begun under {definitions.current.name} v{v} are still in"
                f" flight and this build does not define v{v}"
                for v in missing
            )
            + ": keep those definitions (Definitions.older) until they finish"
        )


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
