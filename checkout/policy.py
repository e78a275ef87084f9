"""How long a saga's steps may take: step timeouts, attempts and the saga deadline."""

from __future__ import annotations

from dataclasses import dataclass

from bus.retry import exponential_jitter

__all__ = ["SagaTimeouts"]


@dataclass(frozen=True)
class SagaTimeouts:
    """How long a step may take, how often it is tried, and how long a saga may run.

    Attempt n of a step waits ``step_timeout * 2**(n-1)`` seconds (at most
    ``cap``) plus up to 10 % jitter before it counts as timed out.
    """

    step_timeout: float = 10.0
    attempts: int = 3
    saga_deadline: float = 300.0
    cap: float = 120.0
    # How often a compensation is tried before its saga parks for an operator.
    undo_attempts: int = 8

    def __post_init__(self) -> None:
        if (
            self.step_timeout <= 0
            or self.attempts < 1
            or self.undo_attempts < 1
            or self.saga_deadline <= 0
        ):
            raise ValueError(f"bad saga timeouts {self}")

    def step_deadline(self, now: float, attempt: int, step_timeout: float | None = None) -> float:
        """When attempt ``attempt`` times out; ``step_timeout`` overrides the setting for a step."""
        base = step_timeout or self.step_timeout
        return now + exponential_jitter(attempt, base=base, cap=self.cap, jitter=base / 10)

    @classmethod
    def parse(cls, spec: str | None) -> SagaTimeouts:
        """Parse ``step=10,attempts=3,undo=8,saga=300,cap=120``; empty means the defaults."""
        names = {
            "step": "step_timeout",
            "attempts": "attempts",
            "undo": "undo_attempts",
            "saga": "saga_deadline",
            "cap": "cap",
        }
        values: dict[str, float] = {}
        for part in (spec or "").split(","):
            if part.strip():
                key, _, value = part.partition("=")
                if key.strip() not in names:
                    raise ValueError(f"unknown timeout setting {key!r}; use {', '.join(names)}")
                values[names[key.strip()]] = float(value)
        attempts = int(values.pop("attempts", cls.attempts))
        undo_attempts = int(values.pop("undo_attempts", cls.undo_attempts))
        return cls(attempts=attempts, undo_attempts=undo_attempts, **values)
