"""bench.instructions: instructions per saga from two callgrind runs of one seed."""

from __future__ import annotations

import pytest

from bench import instructions

CALLGRIND_TAIL = """{"runs": 1, "sagas": 20, "failures": 0, "digest": "d9866a410ac507a8"}
==21327== Events    : Ir
==21327== Collected : 4307570631
"""


def test_the_count_and_the_digest_are_read_from_the_runs_output() -> None:
    assert instructions.collected(CALLGRIND_TAIL) == (4_307_570_631, "d9866a410ac507a8")


def test_output_without_a_count_is_an_error_that_shows_it() -> None:
    with pytest.raises(ValueError, match="no instruction count"):
        instructions.collected('{"digest": "ab"}\nSegmentation fault')


def test_per_saga_leaves_out_what_both_runs_share() -> None:
    start_up = 4_000_000_000
    assert instructions.per_saga((20, start_up + 20 * 7_500), (60, start_up + 60 * 7_500)) == 7_500


def test_the_large_run_must_have_more_orders() -> None:
    with pytest.raises(ValueError, match="more orders"):
        instructions.per_saga((60, 2), (20, 1))


def test_without_valgrind_it_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("bench.instructions.shutil.which", lambda _: None)

    assert instructions.main([]) == 2
    assert "apt-get install valgrind" in capsys.readouterr().err
