"""The timeline's order: oldest first, but never an effect before its cause."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["causal_order"]

T = TypeVar("T")


def causal_order(
    items: Sequence[T],
    *,
    message_id: Callable[[T], str],
    causation_id: Callable[[T], str | None],
    at: Callable[[T], float],
) -> list[T]:
    """``items`` (messages of one saga) oldest first, each after the message that caused it.

    Clocks are not causality: a reply can carry an earlier time than its command
    (another module's clock, or the same millisecond). A message whose cause is
    not among ``items`` starts a chain of its own.
    """
    ids = {message_id(item) for item in items}
    children: dict[str | None, list[T]] = {}
    for item in items:
        cause = causation_id(item)
        children.setdefault(cause if cause in ids else None, []).append(item)
    heap = [(at(item), n, item) for n, item in enumerate(children.get(None, []))]
    heapq.heapify(heap)
    ordered: list[T] = []
    counter = len(heap)
    while heap:
        _, _, item = heapq.heappop(heap)
        ordered.append(item)
        for child in children.get(message_id(item), []):
            counter += 1
            heapq.heappush(heap, (at(child), counter, child))
    return ordered
