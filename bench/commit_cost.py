"""What one group commit costs the event loop when nothing shares it (prints JSON).

    .venv/bin/python -m bench.commit_cost [--synchronous FULL|NORMAL] [--n N] [--uvloop]

Sequential ``Database.transact`` calls of one small insert each, on a fresh file: the
wall time and the calling (event loop) thread's CPU per commit. The app runs on uvloop;
``--uvloop`` measures there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import anyio
from sqlalchemy import MetaData

from bus.sqlite import Database, Tx
from bus.tables import add_bus_tables


async def measure(path: Path, synchronous: str, n: int) -> dict[str, float]:
    metadata = MetaData()
    add_bus_tables(metadata)
    async with Database(path, "bench", metadata, synchronous=synchronous) as db:

        def job(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO inbox (consumer, message_id, processed_at) VALUES (?,?,?)",
                ("bench", os.urandom(8).hex(), tx.now),
            )

        for _ in range(200):  # warm up
            await db.transact(job)
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            await db.transact(job)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return {
        "wall_us_per_commit": round(wall / n * 1e6, 1),
        "loop_cpu_us_per_commit": round(cpu / n * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        figures = anyio.run(
            measure,
            Path(directory) / "bench.sqlite3",
            args.synchronous,
            args.n,
            backend_options={"use_uvloop": args.uvloop},
        )
    print(
        json.dumps({"synchronous": args.synchronous, "uvloop": args.uvloop, "n": args.n, **figures})
    )


if __name__ == "__main__":
    main()
