"""The peer comparison's plumbing (not a timed test): its options and its ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare_peer import compare, parse_args


def test_the_comparison_defaults_to_c64_at_full_against_the_peer_at_the_same_durability() -> None:
    args = parse_args(["--peer", "/peers/dbos-py"])
    assert args.peer == Path("/peers/dbos-py")
    assert (args.concurrency, args.synchronous, args.peer_profile) == (64, "FULL", "wal-full")
    assert args.rounds >= 1


def test_a_comparison_without_a_peer_or_with_no_rounds_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    with pytest.raises(SystemExit):
        parse_args(["--peer", "p", "--rounds", "0"])


def test_the_ratios_are_ours_over_the_peers_medians() -> None:
    ours = [
        {"sagas_per_s": 500, "p50_ms": 90, "p99_ms": 200},
        {"sagas_per_s": 700, "p50_ms": 80, "p99_ms": 100},
        {"sagas_per_s": 600, "p50_ms": 85, "p99_ms": 150},
    ]
    peer = [
        {"sagas_per_s": 100, "p50_ms": 400, "p99_ms": 1000},
        {"sagas_per_s": 140, "p50_ms": 300, "p99_ms": 1400},
        {"sagas_per_s": 120, "p50_ms": 350, "p99_ms": 1200},
    ]
    result = compare(ours, peer)
    assert result["ratio_sagas_per_s"] == 5.0  # 600 / 120
    assert result["ratio_p99"] == 0.125  # 150 / 1200
    assert result["ours"]["sagas_per_s_each"] == [500, 700, 600]
    with pytest.raises(ValueError, match="at least one run"):
        compare(ours, [])


def test_our_side_can_run_as_processes_over_the_local_bus() -> None:
    args = parse_args(["--peer", "p", "--bus", "local", "--processes", "order/checkout"])
    assert (args.bus, args.processes) == ("local", "order/checkout")
    assert parse_args(["--peer", "p"]).bus == "memory"
    with pytest.raises(SystemExit):
        parse_args(["--peer", "p", "--bus", "kafka"])  # the peer runs on no broker either
