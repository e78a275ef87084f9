"""The deterministic simulation (tests/sim): the whole saga under a seeded scheduler.

``SIM_SEEDS`` (default 200) seeds of ``SIM_ORDERS`` (default 50) orders run per saga
style, on one worker process per core (``SIM_JOBS`` to change it); ``./dev sim
--seeds 1000`` runs more from the command line. A failure names the seed and the
one-line command that repeats the run exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.sim.__main__ import main as sim_main
from tests.sim.harness import SimConfig, SimResult, run_simulation
from tests.sim.mutations import MUTATIONS, simulation_for
from tests.sim.parallel import default_jobs, run_many

ROOT = Path(__file__).resolve().parent.parent

SAGAS = ("orchestration", "choreography")
SEEDS = int(os.environ.get("SIM_SEEDS", "200"))
ORDERS = int(os.environ.get("SIM_ORDERS", "50"))
JOBS = int(os.environ.get("SIM_JOBS", str(default_jobs())))
# Each bug put back is caught within this many seeds (of 20 orders), in both styles.
CATCH_WITHIN = 20


def _report(result: SimResult) -> str:
    lines = "\n  ".join(result.violations[:10])
    return f"seed {result.seed} failed; reproduce with: {result.command}\n  {lines}"


@pytest.mark.parametrize("saga", SAGAS)
def test_one_seed_gives_one_exact_run(saga: str, tmp_path: Path) -> None:
    config = SimConfig(seed=5, saga=saga, orders=30)
    first = run_simulation(config, tmp_path / "first")
    second = run_simulation(config, tmp_path / "second")
    assert first.ok, _report(first)
    assert first.as_dict() == second.as_dict()
    assert first.digest
    assert first.crashes > 0, "the seed should crash something"
    other = run_simulation(SimConfig(seed=6, saga=saga, orders=30), tmp_path / "other")
    assert other.digest != first.digest


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 30 s per style here (2 cores, loaded); room for a slower CI
@pytest.mark.parametrize("saga", SAGAS)
def test_every_invariant_holds_and_every_saga_ends_over_many_seeds(
    saga: str, tmp_path: Path
) -> None:
    failures: list[str] = []
    crashes = redelivered = 0
    outcomes: set[str] = set()
    configs = [SimConfig(seed=seed, saga=saga, orders=ORDERS) for seed in range(SEEDS)]
    for result in run_many(configs, tmp_path, jobs=JOBS):
        crashes += result.crashes
        redelivered += result.redelivered
        outcomes.update(result.outcomes)
        if not result.ok:
            failures.append(_report(result))
    assert not failures, "\n".join(failures[:5])
    # The runs did meet the faults they are meant to survive.
    assert crashes > SEEDS
    assert redelivered > 0
    assert outcomes == {"COMPLETED", "CANCELLED"}


MUTATION_CASES = [
    pytest.param(mutation, saga, id=f"{mutation}-{saga}")
    for mutation in sorted(MUTATIONS)
    for saga in SAGAS
    if not (mutation == "choreography-abort" and saga == "orchestration")
]


@pytest.mark.parametrize(("mutation", "saga"), MUTATION_CASES)
def test_the_simulation_catches_each_bug_put_back(mutation: str, saga: str, tmp_path: Path) -> None:
    simulation = simulation_for(frozenset({mutation}))
    for seed in range(CATCH_WITHIN):
        config = SimConfig(seed=seed, saga=saga, orders=20, mutations=frozenset({mutation}))
        result = run_simulation(config, tmp_path / str(seed), simulation=simulation)
        if not result.ok:
            assert f"--mutations {mutation}" in result.command
            return
    pytest.fail(f"{mutation} went unnoticed in {CATCH_WITHIN} seeds of {saga}")


def test_a_failing_run_prints_its_seed_and_the_command_that_repeats_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--seed", "0", "--seeds", "3", "--orders", "20", "--saga", "choreography",
            "--mutations", "skip-inbox", "--data-dir", str(tmp_path)]  # fmt: skip
    assert sim_main(argv) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failures"] >= 1
    failed = summary["failed"][0]
    command = failed["command"]
    assert command.startswith(f"./dev sim --seed {failed['seed']} --saga choreography")
    assert f"reproduce with: {command}" in err
    # The printed command repeats the run exactly: the same seed fails the same way.
    args = command.removeprefix("./dev sim ").split()
    assert sim_main([*args, "--data-dir", str(tmp_path / "again")]) == 1
    assert json.loads(capsys.readouterr()[0].strip().splitlines()[-1])["failures"] == 1


def test_the_same_seeds_give_the_same_databases_in_another_process(tmp_path: Path) -> None:
    """Nothing depends on the process: not on string hashing, not on the real clock."""
    digests = set()
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "tests.sim", "--seeds", "2", "--orders", "15",
             "--data-dir", str(tmp_path / hash_seed)],
            cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        digests.add(json.loads(result.stdout.strip().splitlines()[-1])["digest"])
    assert len(digests) == 1


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "from-a-fork-server"])
def test_runs_in_worker_processes_are_the_runs_of_one_process(
    threaded: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summaries = []
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    if threaded:  # the parent has another thread: its workers come from a fork server
        other.start()
    try:
        for jobs in ("1", "2"):
            argv = ["--seeds", "3", "--orders", "15", "--jobs", jobs,
                    "--data-dir", str(tmp_path / jobs)]  # fmt: skip
            assert sim_main(argv) == 0
            summaries.append(json.loads(capsys.readouterr()[0].strip().splitlines()[-1]))
    finally:
        release.set()
    assert [s["jobs"] for s in summaries] == [1, 2]
    assert summaries[0]["digest"] == summaries[1]["digest"]


def test_a_clean_run_exits_zero_with_one_json_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim_main(["--seeds", "2", "--orders", "10", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()[0].strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert summary["runs"] == 4  # both saga styles by default
    assert summary["failures"] == 0
