"""Many seeds at once: each run in a worker process, the results in the order asked.

A run depends on nothing but its config (its own event loop, its own files, a
seeded scheduler), so where it runs changes nothing: one seed is still one exact
run, and the results come back in the order of the configs, whatever the order
the workers finish in. Workers are forked, with what the parent has imported
(from a fork server when the parent has threads, see ``_context``); every run
copies the empty databases the parent made.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.sim.harness import SimConfig, SimResult, empty_databases, run_simulation
from tests.sim.mutations import simulation_for

__all__ = ["default_jobs", "run_many"]


def default_jobs() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run(task: tuple[SimConfig, Path, Path, bool]) -> SimResult:
    config, data_dir, template, keep = task
    simulation = simulation_for(config.mutations)
    result = run_simulation(config, data_dir, simulation=simulation, template=template)
    if result.ok and not keep:
        shutil.rmtree(data_dir)
    return result


def _quiet_as(level: int) -> None:
    """A worker logs what its parent would (the handlers failing on purpose warn)."""
    logging.basicConfig(level=level)
    logging.getLogger().setLevel(level)


def run_many(
    configs: Sequence[SimConfig], root: Path, *, jobs: int = 1, keep: bool = False
) -> Iterator[SimResult]:
    """Run each config in ``root / "<saga>-<seed>"``, on up to ``jobs`` processes; yield
    the results in the order of ``configs``. A passing run's databases are removed
    unless ``keep``; a failing run's stay where ``data_dir_of`` says."""
    template = empty_databases(root)  # made once, here: every run copies it
    tasks = [(config, data_dir_of(root, config), template, keep) for config in configs]
    jobs = max(1, min(jobs, len(tasks)))
    if jobs == 1:
        yield from map(_run, tasks)
        return
    level = logging.getLogger().getEffectiveLevel()
    with _context().Pool(jobs, initializer=_quiet_as, initargs=(level,)) as pool:
        yield from pool.imap(_run, tasks)


def _context() -> multiprocessing.context.BaseContext:
    """Fork while this process has one thread: the workers start with its imports for
    free. With more (a test session's leftovers), a lock another thread holds would
    stay held in the child: then fork from a server that has imported the simulation."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def data_dir_of(root: Path, config: SimConfig) -> Path:
    """Where a run keeps its databases."""
    return root / f"{config.saga}-{config.seed}"
