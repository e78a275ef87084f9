"""Seeded business faults: a test and demo hook every participant honours.

Whether a step fails for an order is a pure function of the seed, the step
and the order id. The step names are the saga definition's: ``main`` checks
them against it and tells each participant which steps it runs, so no module
names a step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

__all__ = ["NO_FAULTS", "FaultPlan", "StepFaults"]


class FaultPlan:
    """Seeded business-failure injection, per saga step.

    A redelivered command meets the same fate, and a run can be repeated
    exactly. Off (no rates) by default. ``steps``, when given, are the names a
    rate may use (the steps that can fail for business reasons).
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        *,
        steps: Collection[str] | None = None,
    ) -> None:
        self.rates = dict(rates or {})
        self.seed = seed
        for step, rate in self.rates.items():
            if (steps is not None and step not in steps) or not 0.0 <= rate <= 1.0:
                known = ", ".join(steps or ())
                raise ValueError(f"bad fault rate {step}={rate}: steps are {known}; rates 0..1")

    @classmethod
    def parse(
        cls, spec: str | None, seed: int = 0, *, steps: Collection[str] | None = None
    ) -> FaultPlan:
        """Parse ``payment=0.1,stock=0.05``; empty means no faults."""
        rates: dict[str, float] = {}
        for part in (spec or "").split(","):
            if part.strip():
                step, _, rate = part.partition("=")
                try:
                    rates[step.strip()] = float(rate)
                except ValueError:
                    raise ValueError(f"bad fault rate {part.strip()!r}: use STEP=RATE") from None
        return cls(rates, seed, steps=steps)

    def fails(self, step: str, order_id: str) -> bool:
        rate = self.rates.get(step, 0.0)
        if rate <= 0.0:
            return False
        digest = hashlib.blake2b(f"{self.seed}:{step}:{order_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rate

    def for_steps(self, steps: Collection[str]) -> StepFaults:
        """What one participant sees: whether the steps it runs fail for an order."""
        return StepFaults(self, tuple(steps))


class StepFaults:
    """The faults of the saga steps one participant runs (the composition root says which)."""

    def __init__(self, plan: FaultPlan, steps: tuple[str, ...]) -> None:
        self.plan = plan
        self.steps = steps

    def fails(self, order_id: str) -> bool:
        return any(self.plan.fails(step, order_id) for step in self.steps)


NO_FAULTS = StepFaults(FaultPlan(), ())
