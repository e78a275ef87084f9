"""The in-process transport: per-subscription queues drained by one task each.

Nothing here is durable, and nothing needs to be: an envelope stays
undispatched in its outbox until every subscription has handled it, so a crash
loses only queue contents that the relay publishes again at start-up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Sequence

import anyio

from bus.messages import Command, Envelope, MessageRegistry
from bus.ports import BatchHandler, DeliveredCallback
from bus.retry import backoff

__all__ = ["DuplicateHandlerError", "InMemoryTransport"]

log = logging.getLogger(__name__)

MAX_BATCH = 256


class DuplicateHandlerError(Exception):
    """Raised when a second subscription asks for a command type."""


class _Delivery:
    """One published envelope, until every subscription it went to has handled it."""

    __slots__ = ("envelope", "on_delivered", "remaining")

    def __init__(self, envelope: Envelope, remaining: int, on_delivered: DeliveredCallback) -> None:
        self.envelope = envelope
        self.remaining = remaining
        self.on_delivered = on_delivered


class _Subscription:
    __slots__ = ("handler", "name", "queue", "types", "wakeup")

    def __init__(self, name: str, types: Collection[str] | None, handler: BatchHandler) -> None:
        self.name = name
        self.types = None if types is None else frozenset(types)
        self.handler = handler
        self.queue: deque[_Delivery] = deque()
        self.wakeup = anyio.Event()


class InMemoryTransport:
    """Delivers envelopes to subscriptions within this process."""

    def __init__(
        self, registry: MessageRegistry | None = None, *, retry_delay: float = 0.05
    ) -> None:
        self._registry = registry
        self._subscriptions: list[_Subscription] = []
        self._routes: dict[str, list[_Subscription]] = {}
        self._retry_delay = retry_delay

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        if types is not None and self._registry is not None:
            for type_name in types:
                cls = self._registry.message_class(type_name)
                if issubclass(cls, Command) and any(
                    sub.types is not None and type_name in sub.types for sub in self._subscriptions
                ):
                    raise DuplicateHandlerError(f"{type_name} already has a handler")
        self._subscriptions.append(_Subscription(subscription, types, handler))
        self._routes.clear()

    def _targets(self, type_name: str) -> list[_Subscription]:
        targets = self._routes.get(type_name)
        if targets is None:
            targets = [s for s in self._subscriptions if s.types is None or type_name in s.types]
            self._routes[type_name] = targets
        return targets

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        done: list[Envelope] = []
        for envelope in envelopes:
            targets = self._targets(envelope.type)
            if not targets:
                done.append(envelope)
                continue
            delivery = _Delivery(envelope, len(targets), on_delivered)
            for sub in targets:
                sub.queue.append(delivery)
                sub.wakeup.set()
        if done:
            on_delivered(done)

    @staticmethod
    def _ack(batch: Sequence[_Delivery]) -> None:
        finished: dict[DeliveredCallback, list[Envelope]] = {}
        for delivery in batch:
            delivery.remaining -= 1
            if delivery.remaining == 0:
                finished.setdefault(delivery.on_delivered, []).append(delivery.envelope)
        for callback, envelopes in finished.items():
            callback(envelopes)

    async def run(self) -> None:
        async with anyio.create_task_group() as task_group:
            for sub in self._subscriptions:
                task_group.start_soon(self._consume, sub, name=f"consume:{sub.name}")

    async def _consume(self, sub: _Subscription) -> None:
        failures = 0
        while True:
            if not sub.queue:
                await sub.wakeup.wait()
                sub.wakeup = anyio.Event()
                continue
            count = min(len(sub.queue), MAX_BATCH)
            batch = [sub.queue[i] for i in range(count)]
            try:
                await sub.handler([delivery.envelope for delivery in batch])
            except Exception:
                # The handler could not even park the batch (its database is
                # failing): keep it at the head of the queue and try again later.
                failures += 1
                log.exception("subscription %s failed on a batch (attempt %d)", sub.name, failures)
                await anyio.sleep(backoff(failures, base=self._retry_delay, cap=5.0))
                continue
            failures = 0
            for _ in range(count):
                sub.queue.popleft()
            self._ack(batch)
