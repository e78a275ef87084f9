"""The diagrams are generated from the saga definition, and the README shows exactly them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from checkout.diagrams import diagrams, paths, render
from checkout.flow import CHECKOUT
from tests.fraud.flow import CHECKOUT_V2

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_readme_shows_the_generated_table_and_diagrams() -> None:
    result = run("scripts/readme_diagrams.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_diagram_command_prints_every_path_in_both_styles() -> None:
    result = run("main.py", "diagram")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(CHECKOUT)
    titles = [line.strip() for line in result.stdout.splitlines() if "title" in line]
    # success, and a failure of payment, stock, shipping and the pivot, in each style
    assert len(titles) == 2 * 5


def test_one_style_and_one_version_can_be_asked_for() -> None:
    result = run("main.py", "diagram", "--saga", "choreography", "--version", "2",
                 "--flow", "tests.fraud.flow:FLOW")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(CHECKOUT_V2, ("choreography",))
    assert "PAYMENT-->>FRAUD: PaymentCompleted" in result.stdout
    assert "FRAUD-->>INVENTORY: FraudCleared" in result.stdout


def test_an_unknown_version_is_a_usage_error() -> None:
    result = run("main.py", "diagram", "--version", "7")
    assert result.returncode == 2
    assert "no definition v7" in result.stderr


def test_each_compensation_path_undoes_the_steps_before_the_failure_last_first() -> None:
    (_, success), *failures = list(diagrams(CHECKOUT_V2, "orchestration"))
    assert "OrderCompleted" in success
    assert "(compensation)" not in success
    for path, (_, text) in zip(list(paths(CHECKOUT_V2))[1:], failures, strict=True):
        assert path.failed is not None
        undone = [
            line.split(": ")[1].removesuffix(" (compensation)")
            for line in text.splitlines()
            if line.endswith("(compensation)")
        ]
        expected = [
            CHECKOUT_V2.step(name).compensation.type.TYPE.partition(".")[2]  # type: ignore[union-attr]
            for name in CHECKOUT_V2.undo_order([s.name for s in path.succeeded])
        ]
        assert undone == expected
        assert undone[-1] == "CancelOrder"
