"""A small chaos run (``bench/chaos.py``) per saga mode: bus chaos on, orders placed at a
steady rate while the real process is SIGKILLed and restarted, then every invariant.

The full run (10,000 orders, 20 kills) is ``python -m bench.chaos``; see bench/CHAOS.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Config, run_mode

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.crash]


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_a_small_chaos_run_with_kills_keeps_every_invariant(
    mode: str, tmp_path: Path
) -> None:
    config = Config(orders=300, rate=100.0, kills=3, saga=mode, seed=11, drain_timeout=60.0)
    result = await run_mode(config, tmp_path / "data")
    print(result)
    assert result["kills"] == 3
    assert result["orders_placed"] == 300, result
    assert result["not_terminal"] == 0, result
    assert result["violations"] == 0, result["violation_samples"]
    assert result["completed"] + result["cancelled"] == 300
    # The run went through every path: completions and each kind of failure.
    assert result["completed"] > 0
    assert {"payment failed: insufficient_funds", "stock failed: insufficient_stock",
            "shipping failed: country_not_served"} <= set(result["cancel_reasons"])  # fmt: skip


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_a_chaos_run_with_tight_timeouts_keeps_every_invariant_through_aborts(
    mode: str, tmp_path: Path
) -> None:
    """Steps of 0.3 s under load and kills: sagas time out and abort, racing their replies."""
    config = Config(
        orders=400, rate=200.0, kills=3, saga=mode, seed=4, concurrency=128,
        timeouts="step=0.3,attempts=2,saga=5", drain_timeout=60.0,
    )  # fmt: skip
    result = await run_mode(config, tmp_path / "data")
    assert result["not_terminal"] == 0, result
    assert result["violations"] == 0, result["violation_samples"]
