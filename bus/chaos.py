"""Seeded fault injection per message type: duplicate or delayed delivery, handler
exceptions and handler hangs. For tests, demos and the chaos run; off by default.

Whether a fault hits is a pure function of the seed, the fault, the message id
and the attempt, so a failing run can be repeated exactly.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from bus.errors import TransientError
from bus.messages import Envelope
from bus.ports import BatchHandler, DeliveredCallback, Transport

__all__ = ["ChaosPlan", "ChaosTransport", "InjectedFaultError"]

KINDS = ("duplicate", "delay", "exception", "hang")


class InjectedFaultError(TransientError):
    """Raised by a handler that the chaos plan chose to fail."""


@dataclass(frozen=True)
class ChaosPlan:
    """Fault rates per kind, for every message type (``*``) or for one type."""

    rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    seed: int = 0
    delay: float = 0.2
    hang: float = 2.0

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0) -> ChaosPlan | None:
        """Parse ``duplicate=0.05,hang=0.01;payment.ProcessPayment:exception=0.2``.

        Entries are separated by ``;``; an entry without ``TYPE:`` applies to every
        type. ``delay_s`` and ``hang_s`` set how long a delay or a hang lasts.
        """
        rates: dict[str, dict[str, float]] = {}
        durations = {"delay_s": cls.delay, "hang_s": cls.hang}
        for entry in (spec or "").split(";"):
            if not entry.strip():
                continue
            type_name, _, faults = entry.rpartition(":")
            for part in faults.split(","):
                kind, _, rate = part.partition("=")
                kind = kind.strip()
                if kind in durations:
                    durations[kind] = float(rate)
                    continue
                if kind not in KINDS or not 0.0 <= float(rate) <= 1.0:
                    raise ValueError(f"bad chaos setting {part!r}: kinds are {KINDS}, rates 0..1")
                rates.setdefault(type_name.strip() or "*", {})[kind] = float(rate)
        return cls(rates, seed, durations["delay_s"], durations["hang_s"]) if rates else None

    def hits(self, kind: str, envelope: Envelope, attempt: int = 1) -> bool:
        rate = self.rates.get(envelope.type, {}).get(kind, self.rates.get("*", {}).get(kind, 0.0))
        if rate <= 0.0:
            return False
        key = f"{self.seed}:{kind}:{envelope.message_id}:{attempt}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rate


class ChaosTransport:
    """Wraps a transport: duplicates some deliveries and delays others.

    ``injected`` counts what it did, by kind (``duplicate``, ``delay``): the
    evidence that a test's faults really happened.
    """

    def __init__(self, inner: Transport, plan: ChaosPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.injected: Counter[str] = Counter()
        self._task_group: anyio.abc.TaskGroup | None = None

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        self.inner.subscribe(subscription, types, handler)

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        now = [e for e in envelopes if not self.plan.hits("delay", e)]
        later = [e for e in envelopes if self.plan.hits("delay", e)]
        twice = [e for e in envelopes if self.plan.hits("duplicate", e)]
        self.injected.update(delay=len(later), duplicate=len(twice))
        if now:
            self.inner.publish(now, on_delivered)
        if twice:
            self.inner.publish(twice, lambda _: None)
        if later and self._task_group is not None:
            self._task_group.start_soon(self._publish_later, later, on_delivered)
        elif later:
            self.inner.publish(later, on_delivered)

    async def _publish_later(
        self, envelopes: list[Envelope], on_delivered: DeliveredCallback
    ) -> None:
        await anyio.sleep(self.plan.delay)
        self.inner.publish(envelopes, on_delivered)

    async def run(self) -> None:
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            await self.inner.run()
