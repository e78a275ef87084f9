"""Transports for tests and demos that misbehave on purpose, as real networks do."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bus.messages import Envelope
from bus.ports import BatchHandler, DeliveredCallback, Transport

__all__ = ["DuplicatingTransport"]


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
