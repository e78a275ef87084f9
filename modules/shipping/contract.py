"""The shipping module's messages: the only thing other code may know of it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.messages import Command, Compensated, Event, Failure, Message

__all__ = [
    "MESSAGES",
    "CancelShipment",
    "Destination",
    "ParcelLine",
    "ScheduleShipment",
    "ShipmentCancelled",
    "ShipmentFailed",
    "ShipmentScheduled",
]


class Destination(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A shipping address; ``country`` is an ISO 3166-1 alpha-2 code."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str


class ParcelLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A quantity of one sku in the parcel."""

    sku: str
    quantity: Annotated[int, msgspec.Meta(gt=0)]


class ScheduleShipment(Command, frozen=True, kw_only=True):
    """Asks shipping to schedule one shipment for an order, at most once per order."""

    TYPE = "shipping.ScheduleShipment"
    order_id: str
    destination: Destination
    lines: tuple[ParcelLine, ...]


class ShipmentScheduled(Event, frozen=True, kw_only=True):
    """Emitted once when an order's shipment is scheduled."""

    TYPE = "shipping.ShipmentScheduled"
    order_id: str
    shipment_id: str
    country: str


class ShipmentFailed(Failure, frozen=True, kw_only=True):
    """Emitted when no shipment can be scheduled.

    ``reason`` is ``country_not_served``, ``already_cancelled`` or ``injected_fault``.
    """

    TYPE = "shipping.ShipmentFailed"
    order_id: str


class CancelShipment(Command, frozen=True, kw_only=True):
    """Asks shipping to cancel an order's shipment (nothing, if none was scheduled).

    A shipment can be cancelled until the order is confirmed (the saga's pivot,
    in the order module), so the saga never asks after that.
    """

    TYPE = "shipping.CancelShipment"
    COMPENSATION = True
    order_id: str
    reason: str | None = None


class ShipmentCancelled(Compensated, frozen=True, kw_only=True):
    """Emitted once when an order's shipment is cancelled (or found never scheduled).

    ``reason`` repeats the cancellation request's reason.
    """

    TYPE = "shipping.ShipmentCancelled"
    order_id: str


MESSAGES: tuple[type[Message], ...] = (
    ScheduleShipment,
    ShipmentScheduled,
    ShipmentFailed,
    CancelShipment,
    ShipmentCancelled,
)
