"""The bus's ports: what a transport must do, whatever carries the messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from bus.messages import Envelope

__all__ = ["BatchHandler", "DeliveredCallback", "Transport"]

BatchHandler = Callable[[Sequence[Envelope]], Awaitable[None]]
"""Handles a batch of envelopes; returns only once each one is durably handled
(its effect committed, or it was parked as a dead letter). Raising means none
of the batch is acknowledged: the transport delivers it again."""

DeliveredCallback = Callable[[Sequence[Envelope]], None]
"""Told which published envelopes the transport no longer needs from the outbox."""


class Transport(Protocol):
    """Carries envelopes from outboxes to subscriptions, at least once, in order per key.

    A subscription is a named consumer (a Kafka consumer group): it receives
    every envelope of the types it asks for, in publish order for envelopes with
    the same ``correlation_id``. A command type has exactly one subscription;
    an event type fans out to all of them. ``types=None`` subscribes to every
    type (an observer such as the saga tracker).
    """

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        """Register a subscription before ``run`` starts."""

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        """Hand over committed outbox envelopes; ``on_delivered`` is called once
        the transport has them durably (the broker acknowledged them, or, in
        process, every subscription has handled them)."""

    async def run(self) -> None:
        """Deliver to the subscriptions until cancelled."""
