"""Where the simulation meets the composition root: the one-shot moves of the
background parts (saga timers, the choreography watchdog, dead-letter retries).

The system runs those parts as loops that sleep on the real clock; the
simulation runs one pass of each whenever its scheduler says so, at the
simulated time. This file is the only place that knows how to find them, so a
change to the saga core's timers means a change here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from bus.consumer import Consumer
from bus.sqlite import Tx
from checkout.timers import run_due_timers
from main import System

__all__ = ["TimerJob", "retry_job", "timer_jobs"]

TimerJob = Callable[[Tx], float | None]
"""One pass of a timer: fire what is due at ``tx.now``; return when the next is due."""

# Background parts the simulation leaves out: they only report (a log line).
IGNORED = frozenset({"stuck-saga-watch"})


def timer_jobs(system: System) -> list[TimerJob]:
    """One pass of each of checkout's durable timers, found through the system's handle."""
    checkout = system.checkout
    if checkout is None:
        return []
    jobs: list[TimerJob] = []
    for name, task in checkout.background.items():
        if name in IGNORED:
            continue
        if not isinstance(task, partial):
            raise TypeError(f"cannot simulate background part {name!r}: {task!r}")
        # The orchestrator's timers and the choreography watchdog: the timer loop
        # over one pass, ``fire_due``, which the scheduler runs instead.
        fire_due = task.args[1] if task.func is run_due_timers else None
        if fire_due is None:
            raise TypeError(f"cannot simulate background part {name!r}: update tests/sim/system.py")
        jobs.append(fire_due)
    return jobs


def retry_job(consumer: Consumer) -> TimerJob:
    """One pass of a consumer's dead-letter retries."""
    return consumer._retry_due
