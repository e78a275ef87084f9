"""Test and demo hooks: named crash points that kill the process on the spot.

A crash point is reached by name, counted over the transactions that emit
messages, which are the saga's step boundaries:

- ``before-commit:DB``, ``after-commit:DB``, ``after-publish:DB``: any such
  transaction of database ``DB`` (``payment``, ``checkout``, ...);
- the same kinds named by what the transaction emitted:
  ``after-commit:payment.PaymentRefunded`` when the type's own module emitted
  it, ``after-commit:checkout/payment.ProcessPayment`` when another database
  did (the orchestrator's commands, the choreography watchdog's nudges);
- ``recovered:DB``: start-up recovery has published what a previous run left
  undispatched, before any of it is marked dispatched.

When the configured point is reached for the configured time, the process
writes ``crash point reached: NAME@COUNT`` to stderr (the record of which point
fired) and sends itself SIGKILL: no cleanup, no flushing, exactly what a crash
at that line would leave behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

__all__ = ["CrashPoints", "point_names"]


def point_names(kind: str, db: str, types: Iterable[str]) -> list[str]:
    """The names of one crash point: by database, and by each message type it emitted."""
    names = [f"{kind}:{db}"]
    for type_name in dict.fromkeys(types):
        own = type_name.partition(".")[0] == db
        names.append(f"{kind}:{type_name}" if own else f"{kind}:{db}/{type_name}")
    return names


class CrashPoints:
    """Kills the process with SIGKILL at the ``count``-th time ``name`` is reached."""

    def __init__(self, name: str, count: int = 1) -> None:
        self.name = name
        self.count = count
        self.remaining = count

    @classmethod
    def parse(cls, spec: str | None) -> CrashPoints | None:
        """Parse ``NAME`` or ``NAME@COUNT``; ``None`` or empty means no crash point."""
        if not spec:
            return None
        name, _, count = spec.partition("@")
        return cls(name, int(count) if count else 1)

    def reached(self, *names: str) -> None:
        """One step boundary, known by all of ``names``."""
        if self.name not in names:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.write(2, f"crash point reached: {self.name}@{self.count}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)
