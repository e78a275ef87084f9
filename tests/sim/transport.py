"""The simulation's transport: nothing moves until the scheduler says so.

Each subscription holds the envelopes published to it, in publish order. The
scheduler picks which subscription goes next and which envelopes it gets:
any envelopes that are the first pending one of their order (``correlation_id``),
so that one order's messages stay in publish order within a subscription (both
real transports keep that: one queue in process, one partition per key on Kafka),
while different orders interleave freely, as Kafka's partitions allow.

``durable`` picks the acknowledgement semantics: like Kafka (the transport has an
envelope once it is published: ``on_delivered`` at once, and a subscription
keeps its queue when its module crashes) or like the in-process bus (``on_delivered``
once every subscription has handled it; a crash loses every queue, and the
outboxes are published again at start-up).
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter

from bus.messages import Envelope
from bus.ports import BatchHandler, DeliveredCallback

__all__ = ["SimTransport"]


class _Delivery:
    __slots__ = ("envelope", "on_delivered", "remaining", "seq")

    def __init__(
        self, envelope: Envelope, remaining: int, on_delivered: DeliveredCallback, seq: int
    ) -> None:
        self.envelope = envelope
        self.remaining = remaining
        self.on_delivered = on_delivered
        self.seq = seq  # publish order, across the transport


class Subscription:
    """What one subscriber has pending: per order, its deliveries in publish order."""

    __slots__ = ("_heads", "handler", "name", "orders", "types")

    def __init__(self, name: str, types: Collection[str] | None, handler: BatchHandler) -> None:
        self.name = name
        self.types = None if types is None else frozenset(types)
        self.handler = handler
        self.orders: dict[str, deque[_Delivery]] = {}
        # The first pending delivery of each order, kept in publish order as the
        # queues change (sorting them again for every delivery: about 1 % of a run).
        self._heads: list[_Delivery] = []

    def append(self, delivery: _Delivery) -> None:
        key = delivery.envelope.correlation_id
        pending = self.orders.get(key)
        if pending is None:
            self.orders[key] = deque((delivery,))
            # Published last, so it goes last: no head was published after it.
            self._heads.append(delivery)
        else:
            pending.append(delivery)

    def heads(self, source: str | None = None) -> list[_Delivery]:
        """The first pending delivery of each order, in publish order (only those
        published by ``source``, if given)."""
        if source is None:
            return self._heads[:]
        return [d for d in self._heads if d.envelope.source == source]

    def remove(self, batch: Sequence[_Delivery]) -> None:
        """Take these order heads off the queue."""
        for delivery in batch:
            key = delivery.envelope.correlation_id
            pending = self.orders.get(key)
            if pending is None or delivery not in pending:
                continue  # gone already (the queue was lost meanwhile)
            was_head = pending[0] is delivery
            pending.remove(delivery)
            if was_head:
                del self._heads[bisect_left(self._heads, delivery.seq, key=_seq)]
                if pending:
                    insort(self._heads, pending[0], key=_seq)
            if not pending:
                del self.orders[key]

    def clear(self) -> None:
        """Lose every pending delivery."""
        self.orders.clear()
        self._heads.clear()


_seq = attrgetter("seq")


class SimTransport:
    """Carries envelopes when the simulation's scheduler says so (see the module doc)."""

    def __init__(self, *, durable: bool) -> None:
        self.durable = durable
        self.subscriptions: dict[str, Subscription] = {}
        self._routes: dict[str, list[Subscription]] = {}
        # Told of every envelope the transport no longer needs from its outbox.
        self.on_ack: Callable[[Sequence[Envelope]], None] | None = None
        self.published = 0
        self.delivered = 0
        self.redelivered = 0

    # -- the Transport protocol ----------------------------------------------------

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        self.subscriptions[subscription] = Subscription(subscription, types, handler)
        self._routes.clear()

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        done: list[Envelope] = []
        for envelope in envelopes:
            targets = self._targets(envelope.type)
            self.published += 1
            if not targets or self.durable:
                done.append(envelope)
            delivery = _Delivery(envelope, len(targets), on_delivered, self.published)
            for sub in targets:
                sub.append(delivery)
        if done:
            self._acknowledge(on_delivered, done)

    def _acknowledge(self, on_delivered: DeliveredCallback, envelopes: list[Envelope]) -> None:
        if self.on_ack is not None:
            self.on_ack(envelopes)
        on_delivered(envelopes)

    async def run(self) -> None:
        raise NotImplementedError("the simulation drives deliveries itself")

    def _targets(self, type_name: str) -> list[Subscription]:
        targets = self._routes.get(type_name)
        if targets is None:
            targets = [
                s for s in self.subscriptions.values() if s.types is None or type_name in s.types
            ]
            self._routes[type_name] = targets
        return targets

    # -- what the scheduler does -------------------------------------------------------

    def busy(self) -> list[Subscription]:
        return [sub for sub in self.subscriptions.values() if sub.orders]

    async def deliver(
        self,
        sub: Subscription,
        rng: random.Random,
        *,
        max_batch: int,
        redeliver: float,
        source: str | None = None,
    ) -> None:
        """Hand ``sub`` a batch of order heads (published by ``source``, if given);
        acknowledge it unless chosen for redelivery.

        The handler raising (its module crashed under it) acknowledges nothing.
        """
        heads = sub.heads(source) or sub.heads()
        count = min(len(heads), rng.randint(1, max_batch))
        if count < len(heads):
            picked = sorted(rng.sample(range(len(heads)), count))
            batch = [heads[i] for i in picked]
        else:
            batch = heads
        await sub.handler([delivery.envelope for delivery in batch])
        self.delivered += len(batch)
        if redeliver and rng.random() < redeliver:
            # The batch was handled but its acknowledgement is lost (a consumer
            # that died before committing its offset): it comes again.
            self.redelivered += len(batch)
            return
        sub.remove(batch)
        if self.durable:
            return
        finished: dict[DeliveredCallback, list[Envelope]] = {}
        for delivery in batch:
            delivery.remaining -= 1
            if delivery.remaining == 0:
                finished.setdefault(delivery.on_delivered, []).append(delivery.envelope)
        for callback, envelopes in finished.items():
            self._acknowledge(callback, envelopes)

    def lose_everything(self) -> None:
        """The in-process bus died with its process: every queue is gone."""
        for sub in self.subscriptions.values():
            sub.clear()
