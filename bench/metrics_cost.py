"""What the hot-path metric calls cost, per call (prints JSON).

    .venv/bin/python -m bench.metrics_cost

Multiply by the calls a saga makes (``GET /metrics`` after a run: group commits,
relayed messages and tracker transitions per saga) for the cost per saga; README
"What it costs" does so.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from telemetry import metrics

N = 200_000


def per_call_us(fn: Callable[[], object]) -> float:
    return round(timeit.timeit(fn, number=N) / N * 1e6, 3)


def main() -> None:
    metrics.configure(style="orchestration", enabled=True)
    figures = {
        "committed_us": per_call_us(lambda: metrics.committed("checkout", 40, 0.002)),
        "relayed_one_us": per_call_us(lambda: metrics.relayed("checkout", [0.001])),
        "saga_transition_us": per_call_us(
            lambda: metrics.saga_transition(
                ("RUNNING", "payment", 1.0, 1.5), "RUNNING", "stock", 1.0, 2.0
            )
        ),
    }
    metrics.configure(style="orchestration", enabled=False)
    figures["committed_off_us"] = per_call_us(lambda: metrics.committed("checkout", 40, 0.002))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
