"""Errors raised by the bus."""

from __future__ import annotations

__all__ = [
    "BusError",
    "MessageDecodeError",
    "TransientError",
    "UnknownMessageTypeError",
]


class BusError(Exception):
    """Base of the bus's errors."""


class UnknownMessageTypeError(BusError):
    """Raised when a message's type or version is not in the registry."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown message type {type_name!r}")
        self.type_name = type_name


class MessageDecodeError(BusError):
    """Raised when a payload does not decode into its message type."""

    def __init__(self, type_name: str, version: int, detail: str) -> None:
        super().__init__(f"cannot decode {type_name} v{version}: {detail}")
        self.type_name = type_name
        self.version = version


class TransientError(BusError):
    """Raised by a handler for a failure that is worth retrying (the bus retries it)."""
