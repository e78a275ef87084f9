"""What a module hands to the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bus.consumer import Route
from bus.sqlite import Database

__all__ = ["ModuleHandle"]


@dataclass(frozen=True)
class ModuleHandle:
    """A built module: its database, the commands it handles and its HTTP routes.

    ``commands`` maps each command type the module accepts to its handler.
    ``route_handlers`` are Litestar handlers; the bus does not look at them.
    ``background`` are named tasks to run (supervised) while the module runs.
    """

    name: str
    db: Database
    commands: Mapping[str, Route]
    route_handlers: Sequence[object] = field(default_factory=tuple)
    background: Mapping[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
