"""Retry policy: which errors are worth retrying, how often, and how long to wait."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass, field

from tenacity import wait_exponential_jitter

from bus.errors import TransientError

__all__ = ["RetryPolicy", "backoff", "exponential_jitter"]


@dataclass(frozen=True)
class _Attempt:
    attempt_number: int


@functools.lru_cache(maxsize=64)
def _wait(base: float, cap: float, jitter: float) -> wait_exponential_jitter:
    """One tenacity wait per policy (a handful), not one per call on the hot path."""
    return wait_exponential_jitter(multiplier=base, max=cap, jitter=jitter)


@functools.lru_cache(maxsize=64)
def _attempt(number: int) -> _Attempt:
    return _Attempt(number)


def exponential_jitter(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """``base * 2**(attempt-1)``, at most ``cap``, plus up to ``jitter`` (tenacity's formula)."""
    # Positional and cached: a step deadline is computed for every saga message.
    wait = _wait(base, cap, jitter)
    return float(wait(_attempt(attempt)))  # type: ignore[arg-type]  # a duck-typed retry state


def backoff(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: every retry loop's backoff."""
    return exponential_jitter(failures, base=base, cap=cap, jitter=base)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter (tenacity's), capped, for a bounded number of attempts.

    ``transient`` lists the exception types retried; any other exception from a
    handler is a bug or a poison message and goes to the dead letters at once.
    ``sqlite3.OperationalError`` covers a busy or locked database.
    """

    attempts: int = 5
    base: float = 0.05
    cap: float = 5.0
    transient: tuple[type[BaseException], ...] = field(
        default=(TransientError, sqlite3.OperationalError, TimeoutError)
    )

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base <= 0 or self.cap < self.base:
            raise ValueError(f"bad retry policy {self}")

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, self.transient)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return backoff(attempt, base=self.base, cap=self.cap)

    @classmethod
    def parse(cls, spec: str | None) -> RetryPolicy:
        """Parse ``attempts=5,base=0.05,cap=5``; empty means the defaults."""
        values: dict[str, float] = {}
        for part in (spec or "").split(","):
            if part.strip():
                key, _, value = part.partition("=")
                if key.strip() not in ("attempts", "base", "cap"):
                    raise ValueError(f"unknown retry setting {key!r}")
                values[key.strip()] = float(value)
        return cls(
            attempts=int(values.get("attempts", cls.attempts)),
            base=values.get("base", cls.base),
            cap=values.get("cap", cls.cap),
        )
