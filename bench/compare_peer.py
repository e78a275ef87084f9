"""The project against its peer (DBOS Transact for Python), alternately, in one run.

    ./dev bench --compare-peer ../shared/peers/dbos-py [--n 2000] [--concurrency 64] [--rounds 3]
    .venv/bin/python -m bench.compare_peer --peer ../shared/peers/dbos-py ...

As the peer's README says, its folder is copied to a writable place (``--workdir``,
default a fresh temp dir) and its pinned requirements are installed into a venv
of its own there, never into the project's. Then, ``--rounds`` times, one run of
the project's benchmark (``bench.saga_bench``, a fresh app and data dir) and one
of the peer's (``bench.py``, one rep), alternately, at the same N and C. Every
run's JSON line is kept under ``bench/results/`` (``compare-<stamp>-<round>-<who>.json``)
and the last line on stdout is the comparison: medians of each side and the
ratios ``sagas_per_s`` (ours / peer: higher is better for us) and ``p99_ms``
(ours / peer: lower is better for us), with the load average around each run. Before
each run, of either side, the machine settles (`settle`: dirty pages flushed, CPUs idle).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.saga_bench import wait_for_idle

__all__ = ["compare", "main", "parse_args"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peer", type=Path, required=True, help="the peer's folder (read-only)")
    parser.add_argument("--n", type=int, default=2000, help="measured sagas per run")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8, help="our bench's httpx clients")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, alternating")
    parser.add_argument(
        "--synchronous", default="FULL", choices=["NORMAL", "FULL"], help="ours (default FULL)"
    )
    parser.add_argument(
        "--peer-profile",
        default="wal-full",
        help="the peer's SQLite profile (default wal-full: the same durability as ours at FULL)",
    )
    parser.add_argument(
        "--bus", default="memory", choices=["memory", "local"], help="ours (default memory)"
    )
    parser.add_argument(
        "--processes",
        metavar="SPEC",
        help="ours, with --bus local: the processes' modules, '/' between processes"
        " (e.g. order,payment,inventory,shipping/checkout)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the peer is copied")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.n < 1 or args.concurrency < 1:
        parser.error("--rounds, --n and --concurrency must be positive")
    return args


def compare(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each side's runs and the ratios ours / peer of sagas/s and p99."""
    if not ours or not peer:
        raise ValueError("need at least one run of each side")

    def side(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "runs": len(runs),
            "sagas_per_s": median(float(r["sagas_per_s"]) for r in runs),
            "p50_ms": median(float(r["p50_ms"]) for r in runs),
            "p99_ms": median(float(r["p99_ms"]) for r in runs),
            "sagas_per_s_each": [r["sagas_per_s"] for r in runs],
        }

    mine, theirs = side(ours), side(peer)
    return {
        "kind": "compare",
        "ours": mine,
        "peer": theirs,
        "ratio_sagas_per_s": round(mine["sagas_per_s"] / theirs["sagas_per_s"], 2),
        "ratio_p99": round(mine["p99_ms"] / theirs["p99_ms"], 3),
    }


def _last_run(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if record.get("kind") == "run":
                return record
    raise RuntimeError(f"no run line in the output:\n{stdout[-2000:]}")


def prepare_peer(peer: Path, workdir: Path) -> Path:
    """Copy the peer and install its requirements into its own venv; return its python."""
    copy = workdir / "dbos-py"
    if not copy.exists():
        shutil.copytree(peer, copy, ignore=shutil.ignore_patterns(".venv", "_runs", "results"))
    python = copy / ".venv" / "bin" / "python"
    stamp = copy / ".venv" / ".installed"
    want = (copy / "requirements.txt").read_text()
    if not stamp.exists() or stamp.read_text() != want:
        subprocess.run([sys.executable, "-m", "venv", str(copy / ".venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(copy / "requirements.txt")],
            check=True,
        )
        stamp.write_text(want)
    return python


def _load() -> float:
    return os.getloadavg()[0]


def settle(idle_percent: float = 90.0, max_wait: float = 30.0) -> dict[str, float]:
    """Before each run, for either side: flush what the last run left dirty and wait
    until the CPUs are idle, so that no run pays for the one before it (the peer's
    writes are still being written back when ours would start)."""
    started = time.monotonic()
    os.sync()
    idle = wait_for_idle(idle_percent, max_wait)
    return {"settle_s": round(time.monotonic() - started, 2), "idle_percent_before": idle}


def _run(cmd: list[str], cwd: Path) -> dict[str, Any]:
    settled = settle()
    before = _load()
    print(f"$ {' '.join(cmd)}  (load {before:.2f})", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-4000:])
    record = _last_run(done.stdout)
    record |= settled
    record["compare_load_before"] = round(before, 2)
    record["compare_load_after"] = round(_load(), 2)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="compare-peer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    peer_python = prepare_peer(args.peer.resolve(), workdir)
    peer_dir = peer_python.parent.parent.parent
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    ours_cmd = [
        sys.executable, "-m", "bench.saga_bench", "--n", str(args.n), "--warmup", str(args.warmup),
        "--concurrency", str(args.concurrency), "--clients", str(args.clients),
        "--synchronous", args.synchronous, "--bus", args.bus,
    ]  # fmt: skip
    if args.processes:
        ours_cmd += ["--processes", args.processes]
    peer_cmd = [
        str(peer_python), "bench.py", "--n", str(args.n), "--warmup", str(args.warmup),
        "--reps", "1", "--concurrency-list", str(args.concurrency),
        "--profiles", args.peer_profile,
    ]  # fmt: skip
    ours: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    for round_ in range(1, args.rounds + 1):
        for who, cmd, cwd, runs in (
            ("ours", ours_cmd, ROOT, ours),
            ("peer", peer_cmd, peer_dir, peer),
        ):
            record = _run(cmd, cwd)
            runs.append(record)
            path = args.results / f"compare-{stamp}-{round_}-{who}.json"
            path.write_text(json.dumps(record, indent=1) + "\n")
    result = compare(ours, peer)
    result |= {
        "n": args.n,
        "concurrency": args.concurrency,
        "synchronous": args.synchronous,
        "bus": args.bus,
        "processes": args.processes,
        "peer_profile": args.peer_profile,
        "stamp": stamp,
    }
    (args.results / f"compare-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
