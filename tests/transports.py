"""Transports for tests and demos that misbehave on purpose, as real networks do."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bus.messages import Envelope
from bus.ports import BatchHandler, DeliveredCallback, Transport

__all__ = ["DuplicatingTransport", "LosingTransport"]


class DuplicatingTransport:
    """Delivers every envelope twice: once at once and again after the first delivery.

    The second copy arrives after the first was handled and acknowledged, as a
    redelivery after a lost acknowledgement would; handlers must ignore it.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.redelivered = 0

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        self.inner.subscribe(subscription, types, handler)

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        def again(delivered: Sequence[Envelope]) -> None:
            on_delivered(delivered)
            self.redelivered += len(delivered)
            self.inner.publish(delivered, lambda _: None)

        self.inner.publish(envelopes, again)

    async def run(self) -> None:
        await self.inner.run()


class LosingTransport:
    """Loses deliveries of the given types (acknowledged, never handled), as a participant
    that crashed after acknowledging would: ``losses[type]`` deliveries, or all if -1.
    The ``spared`` subscriptions (the saga tracker: it records what happened) lose none."""

    def __init__(
        self, inner: Transport, losses: dict[str, int], spared: Collection[str] = ("tracker",)
    ) -> None:
        self.inner = inner
        self.losses = dict(losses)
        self.spared = frozenset(spared)
        self.lost: list[Envelope] = []

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        if subscription in self.spared:
            self.inner.subscribe(subscription, types, handler)
            return

        async def losing(batch: Sequence[Envelope]) -> None:
            kept = [e for e in batch if not self._lose(e)]
            if kept:
                await handler(kept)

        self.inner.subscribe(subscription, types, losing)

    def _lose(self, envelope: Envelope) -> bool:
        left = self.losses.get(envelope.type, 0)
        if left == 0:
            return False
        if left > 0:
            self.losses[envelope.type] = left - 1
        self.lost.append(envelope)
        return True

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        self.inner.publish(envelopes, on_delivered)

    async def run(self) -> None:
        await self.inner.run()
