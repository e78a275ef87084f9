"""The benchmark's plumbing (not a timed test): a short run against a spawned app, in one
process and in two over the local bus, places every order, audits clean and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.kafka_broker import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("options", "processes"),
    [
        ((), 1),
        (("--bus", "local", "--processes", "order,payment,inventory,shipping/checkout"), 2),
    ],
    ids=["one-process", "two-processes-local-bus"],
)
def test_a_short_run_places_every_order_and_audits_clean(
    options: tuple[str, ...], processes: int
) -> None:
    n = 30
    command = [sys.executable, "-m", "bench.saga_bench", "--n", str(n), "--warmup", "5"]
    command += ["--concurrency", "4", "--clients", "2", *options]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    record = json.loads(line)
    assert record["processes"] == processes
    assert record["errors"] == 0, record
    assert record["violations"] == 0, record
    assert sum(record["outcomes"].values()) == n
    assert record["outcomes"].keys() <= {"COMPLETED", "CANCELLED"}
    assert record["latency_by_status_ms"].keys() <= {"COMPLETED", "CANCELLED"}
