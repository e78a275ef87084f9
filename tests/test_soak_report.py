"""The soak report's arithmetic (not a timed test)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.soak import db_sizes, rss_kb, window_rates


def test_first_and_last_tenth_rates_come_from_completion_times() -> None:
    # 100 sagas: the first ten finish within 1 s of the start, the last ten within 5 s.
    ends = [1.0 + i * 0.1 for i in range(10)] + [3.0 + i * 0.01 for i in range(80)]
    ends += [10.0 + i * 0.5 for i in range(10)]
    rates = window_rates(1.0, ends)
    assert rates["first_10pct_sagas_per_s"] == round(10 / 0.9, 1)
    assert rates["last_10pct_sagas_per_s"] == round(10 / (14.5 - ends[-11]), 1)
    assert rates["last_over_first"] < 1
    assert window_rates(0.0, [1.0, 2.0])["first_10pct_sagas_per_s"] is None


def test_database_sizes_count_the_wal_and_rss_reads_this_process(tmp_path: Path) -> None:
    (tmp_path / "order.sqlite3").write_bytes(b"x" * 100)
    (tmp_path / "order.sqlite3-wal").write_bytes(b"x" * 20)
    (tmp_path / "payment.sqlite3").write_bytes(b"x" * 7)
    assert db_sizes(tmp_path) == {"order": 120, "payment": 7}
    assert (rss_kb(os.getpid()) or 0) > 1000
