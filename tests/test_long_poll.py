"""The long poll: every reader waiting on an order wakes when it ends."""

from __future__ import annotations

import pytest

from bus.messages import Envelope
from modules.order import OrderCompleted
from modules.order.api import TerminalWaiters

pytestmark = pytest.mark.anyio


def _completed(order_id: str) -> Envelope:
    message = OrderCompleted(order_id=order_id)
    return Envelope("m1", message.TYPE, 1, order_id, None, "order", 0.0, b"{}", message)


async def test_a_reader_that_gave_up_does_not_strand_another_one() -> None:
    waiters = TerminalWaiters()
    with waiters.watching("o1") as patient:
        with waiters.watching("o1"):
            pass  # a second reader times out and leaves first
        waiters.on_commit([_completed("o1")])
        assert patient.is_set()


async def test_an_order_that_ends_wakes_its_readers_only() -> None:
    waiters = TerminalWaiters()
    with waiters.watching("o1") as one, waiters.watching("o2") as two:
        waiters.on_commit([_completed("o1")])
        assert one.is_set()
        assert not two.is_set()
