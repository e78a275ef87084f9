"""Test and demo hooks: named crash points that kill the process on the spot.

A crash point is reached by name (``before-commit:payment``,
``after-commit:payment``, ``after-publish:payment``, ...), counted over the
transactions that emit messages, which are the saga's step boundaries. When
the configured point is reached for the configured time, the process sends
itself SIGKILL: no cleanup, no flushing, exactly what a crash at that line
would leave behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Mapping

__all__ = ["CrashPoints", "FaultPlan"]


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


class FaultPlan:
    """Seeded business-failure injection, per saga step (``payment``, ``stock``, ``shipping``).

    Whether a step fails for an order is a pure function of the seed, the step
    and the order id, so a redelivered command meets the same fate and a run
    can be repeated exactly. Off (no rates) by default.
    """

    STEPS = ("payment", "stock", "shipping")

    def __init__(self, rates: Mapping[str, float] | None = None, seed: int = 0) -> None:
        self.rates = dict(rates or {})
        self.seed = seed
        for step, rate in self.rates.items():
            if step not in self.STEPS or not 0.0 <= rate <= 1.0:
                raise ValueError(
                    f"bad fault rate {step}={rate}: steps are {self.STEPS}, rates 0..1"
                )

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0) -> FaultPlan:
        """Parse ``payment=0.1,stock=0.05``; empty means no faults."""
        rates: dict[str, float] = {}
        for part in (spec or "").split(","):
            if part.strip():
                step, _, rate = part.partition("=")
                rates[step.strip()] = float(rate)
        return cls(rates, seed)

    def fails(self, step: str, order_id: str) -> bool:
        rate = self.rates.get(step, 0.0)
        if rate <= 0.0:
            return False
        digest = hashlib.blake2b(f"{self.seed}:{step}:{order_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rate
