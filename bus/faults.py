"""Test and demo hooks: named crash points that kill the process on the spot.

A crash point is reached by name (``before-commit:payment``,
``after-commit:payment``, ``after-publish:payment``, ...), counted over the
transactions that emit messages, which are the saga's step boundaries. When
the configured point is reached for the configured time, the process sends
itself SIGKILL: no cleanup, no flushing, exactly what a crash at that line
would leave behind.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CrashPoints"]


class CrashPoints:
    """Kills the process with SIGKILL at the ``count``-th time ``name`` is reached."""

    def __init__(self, name: str, count: int = 1) -> None:
        self.name = name
        self.remaining = count

    @classmethod
    def parse(cls, spec: str | None) -> CrashPoints | None:
        """Parse ``NAME`` or ``NAME@COUNT``; ``None`` or empty means no crash point."""
        if not spec:
            return None
        name, _, count = spec.partition("@")
        return cls(name, int(count) if count else 1)

    def reached(self, name: str) -> None:
        if name != self.name:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
