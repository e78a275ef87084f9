"""The soak figures of a long benchmark run (``saga_bench --soak``).

Is the cost per saga flat as history grows? The run's throughput over its
first and last 10% of sagas (by completion), the app's resident memory
sampled over the run, and the databases' sizes at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

__all__ = ["RssSampler", "db_sizes", "rss_kb", "window_rates"]


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS`` in /proc/<pid>/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class RssSampler:
    """Samples the total RSS of some processes every ``every`` seconds while it runs."""

    def __init__(self, pids: list[int], every: float) -> None:
        self.pids = pids
        self.every = every
        self.start = time.perf_counter()
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        sizes = [rss_kb(pid) for pid in self.pids]
        total = sum(s for s in sizes if s is not None)
        self.samples.append((round(time.perf_counter() - self.start, 1), total))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()

    def report(self) -> dict[str, Any]:
        """``rss_kb``: [[seconds, KiB], ...]; the first and last sample, and the max."""
        values = [kb for _, kb in self.samples]
        return {
            "rss_kb": self.samples,
            "rss_first_kb": values[0] if values else None,
            "rss_last_kb": values[-1] if values else None,
            "rss_max_kb": max(values) if values else None,
        }


def window_rates(start: float, ends: list[float], fraction: float = 0.1) -> dict[str, Any]:
    """Throughput (sagas/s) over the first and the last ``fraction`` of the sagas, by completion.

    The first window runs from the start of the phase to the completion of
    its last saga; the last window from the completion before it to the end.
    """
    ends = sorted(ends)
    k = max(int(len(ends) * fraction), 1)
    if len(ends) < 2 * k + 1:
        return {"first_10pct_sagas_per_s": None, "last_10pct_sagas_per_s": None}
    first = k / max(ends[k - 1] - start, 1e-9)
    last = k / max(ends[-1] - ends[-k - 1], 1e-9)
    return {
        "first_10pct_sagas_per_s": round(first, 1),
        "last_10pct_sagas_per_s": round(last, 1),
        "last_over_first": round(last / first, 3),
    }


def db_sizes(data_dir: Path) -> dict[str, int]:
    """Bytes on disk of each module database (main file + WAL + shared memory)."""
    sizes: dict[str, int] = {}
    for path in sorted(data_dir.glob("*.sqlite3")):
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += (path.parent / (path.name + suffix)).stat().st_size
        sizes[path.stem] = total
    return sizes
