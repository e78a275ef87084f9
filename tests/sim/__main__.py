"""``./dev sim``: run the deterministic simulation over many seeds; one JSON line at the end.

    ./dev sim --seeds 200 --orders 50 --saga choreography
    ./dev sim --seed 17 --saga orchestration         # repeat one run exactly
    ./dev sim --seeds 200 --jobs 1                   # one run at a time, in this process

Runs go to ``--jobs`` worker processes (one per core by default); the results are
taken in seed order, so the report and the digest do not depend on it.
Exits 1 if any run broke an invariant; each failing run is printed (to stderr)
with its violations, the command that repeats it, and where its databases are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.sim.harness import SimConfig
from tests.sim.mutations import MUTATIONS
from tests.sim.parallel import data_dir_of, default_jobs, run_many

SAGAS = ("orchestration", "choreography")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev sim", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=None, help="how many seeds (default 1 with --seed, else 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--orders", type=int, default=50, help="orders per run (default 50)")
    parser.add_argument("--saga", choices=[*SAGAS, "both"], default="both")
    parser.add_argument("--mutations", default="", help=f"bugs to put back: {', '.join(MUTATIONS)}")
    parser.add_argument("--no-faults", action="store_true", help="no crashes nor redeliveries")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where runs write (default: a temp dir)"
    )
    parser.add_argument(
        "--jobs", type=int, default=default_jobs(),
        help="runs at once, each in its own process (default: one per core)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # Handlers failing on purpose log warnings; a failing run is reported below.
    logging.basicConfig(level=logging.ERROR)
    seeds = args.seeds if args.seeds is not None else (1 if "--seed" in (argv or sys.argv) else 20)
    mutations = frozenset(m for m in args.mutations.split(",") if m)
    unknown = sorted(mutations - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutations {unknown}; choose from {', '.join(MUTATIONS)}")
    sagas = SAGAS if args.saga == "both" else (args.saga,)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="sim-"))
    faults = not args.no_faults
    configs = [
        SimConfig(seed=seed, saga=saga, orders=args.orders, mutations=mutations, faults=faults)
        for saga in sagas
        for seed in range(args.seed, args.seed + seeds)
    ]
    failures: list[dict[str, object]] = []
    runs = sagas_run = 0
    digest = hashlib.sha256()
    started = time.perf_counter()
    # In the order of the configs, whichever worker ran them: the same digest, the
    # same report, for any --jobs.
    for config, result in zip(configs, run_many(configs, root, jobs=args.jobs), strict=True):
        runs += 1
        sagas_run += args.orders
        digest.update(result.digest.encode())
        if result.ok:
            continue
        seed, saga = config.seed, config.saga
        failures.append({"seed": seed, "saga": saga, "command": result.command})
        print(f"FAILED seed {seed} ({saga}): reproduce with: {result.command}", file=sys.stderr)
        print(f"  databases kept in {data_dir_of(root, config)}", file=sys.stderr)
        for line in result.violations[:10]:
            print(f"  {line}", file=sys.stderr)
    seconds = time.perf_counter() - started
    if args.data_dir is None and not failures:
        shutil.rmtree(root, ignore_errors=True)
    summary = {
        "runs": runs,
        "sagas": sagas_run,
        "failures": len(failures),
        "failed": failures[:20],
        "seconds": round(seconds, 2),
        "sagas_per_second": round(sagas_run / seconds) if seconds else None,
        "jobs": max(1, min(args.jobs, runs)),
        "mutations": sorted(mutations),
        "digest": digest.hexdigest()[:16],  # of every run's databases: same seeds, same digest
    }
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
