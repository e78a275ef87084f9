"""Machine instructions per simulated saga: a cost figure the VM's speed does not move (JSON).

    .venv/bin/python -m bench.instructions [--saga orchestration|choreography]
        [--orders SMALL,LARGE] [--seed S]

Wall and CPU time on this VM drift by a third within minutes, so a change worth a few
percent cannot be seen in them. This runs one seed of the deterministic simulation
(``tests/sim``: the real modules, handlers, bus and SQLite files) under Valgrind's
callgrind twice, with SMALL and with LARGE orders, and prints the instructions executed
per saga: the difference of the two totals over the difference of the orders, which
leaves out the start-up (imports, the schema) that both runs share. Every run of a seed
is the same run (the JSON carries both digests), so two commits compare exactly: same
digests, same work, and the instructions differ only by what the code costs.

Needs ``valgrind`` (Debian: ``apt-get install valgrind``); about a minute and a half on
two cores (the two runs go side by side), callgrind being some 50 times slower than the
plain run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.environment import git_state, machine

__all__ = ["collected", "main", "per_saga"]

ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected : (\d+)")
_DIGEST = re.compile(r'"digest": "([0-9a-f]+)"')


def collected(log: str) -> tuple[int, str]:
    """The instructions callgrind counted, and the simulation's digest, from their output."""
    count, digest = _COLLECTED.search(log), _DIGEST.search(log)
    if count is None or digest is None:
        raise ValueError(f"no instruction count or digest in the run's output:\n{log[-2000:]}")
    return int(count.group(1)), digest.group(1)


def per_saga(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per saga from two (orders, instructions) runs of one seed."""
    (orders_a, total_a), (orders_b, total_b) = small, large
    if orders_b <= orders_a:
        raise ValueError("the large run needs more orders than the small one")
    return (total_b - total_a) / (orders_b - orders_a)


def _run(saga: str, orders: int, seed: int, out: Path) -> tuple[int, str]:
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "tests.sim", "--seed", str(seed), "--seeds", "1",
        "--orders", str(orders), "--saga", saga, "--jobs", "1",
    ]  # fmt: skip
    # A fixed hash seed: dict and set layouts, and so the work, are the same every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return collected(done.stdout + done.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--saga", default="orchestration", choices=["orchestration", "choreography"]
    )
    parser.add_argument("--orders", default="20,60", help="SMALL,LARGE (default 20,60)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    small, large = (int(n) for n in args.orders.split(","))
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory, ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(_run, args.saga, orders, args.seed, Path(directory) / f"{orders}.out")
            for orders in (small, large)
        ]
        (total_small, digest_small), (total_large, digest_large) = (r.result() for r in runs)
    figures: dict[str, Any] = {
        "kind": "instructions",
        "saga": args.saga,
        "seed": args.seed,
        "orders": [small, large],
        "instructions": [total_small, total_large],
        "digests": [digest_small, digest_large],
        "instructions_per_saga": round(per_saga((small, total_small), (large, total_large))),
        "machine": machine(),
        "git": git_state(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
