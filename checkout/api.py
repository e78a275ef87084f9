"""HTTP routes of checkout: a saga's audit trail and the list of sagas."""

from __future__ import annotations

import heapq
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, QueryParameter
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from checkout.db import TimelineRow, TrackedSagaRow
from checkout.definition import Definitions

__all__ = ["SagaView", "TimelineEntry", "checkout_routes"]

TERMINAL = ("COMPLETED", "COMPENSATED")


class TimelineEntry(msgspec.Struct):
    at: datetime
    module: str
    type: str
    kind: str
    compensation: bool
    # From the saga's definition: the step the message belongs to and what it
    # does there (action, succeeded, failed, compensation, compensated, lock).
    step: str | None
    role: str | None
    message_id: str
    causation_id: str | None
    to: str | None
    data: dict[str, Any]


class SagaView(msgspec.Struct):
    order_id: str
    status: str
    step: str
    last_message: str
    started_at: datetime
    updated_at: datetime
    age_seconds: float
    stuck: bool


def _causal_order(rows: list[TimelineRow]) -> list[TimelineRow]:
    """Oldest first, but never an effect before its cause (clocks are not causality)."""
    ids = {row.message_id for row in rows}
    children: dict[str | None, list[TimelineRow]] = {}
    for row in rows:
        parent = row.causation_id if row.causation_id in ids else None
        children.setdefault(parent, []).append(row)
    heap = [(row.occurred_at, n, row) for n, row in enumerate(children.get(None, []))]
    heapq.heapify(heap)
    ordered: list[TimelineRow] = []
    counter = len(heap)
    while heap:
        _, _, row = heapq.heappop(heap)
        ordered.append(row)
        for child in children.get(row.message_id, []):
            counter += 1
            heapq.heappush(heap, (child.occurred_at, counter, child))
    return ordered


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def checkout_routes(
    db: Database, definitions: Definitions, *, stuck_after: float
) -> list[HTTPRouteHandler]:
    """Build checkout's read routes over its database."""

    @get("/orders/{order_id:str}/timeline", operation_id="getTimeline", tags=["orders"])
    async def timeline(order_id: FromPath[str]) -> list[TimelineEntry]:
        """Every command, event, reply and compensation of the order's saga, in causal order."""
        async with AsyncSession(db.reader) as session:
            rows = list(
                await session.exec(select(TimelineRow).where(TimelineRow.saga_id == order_id))
            )
            tracked = await session.get(TrackedSagaRow, order_id)
        if not rows:
            raise NotFoundException(f"no saga for order {order_id}")
        version = tracked.definition_version if tracked is not None else None
        definition = definitions.get(version or definitions.current.version)

        def label(type_name: str) -> tuple[str | None, str | None]:
            found = definition.role(type_name) if definition is not None else None
            return (None, None) if found is None else (found[0].name, str(found[1]))

        return [
            TimelineEntry(
                at=_when(row.occurred_at),
                module=row.source,
                type=row.type,
                kind=row.kind,
                compensation=row.compensation,
                step=label(row.type)[0],
                role=label(row.type)[1],
                message_id=row.message_id,
                causation_id=row.causation_id,
                to=row.target,
                data=msgspec.json.decode(row.payload),
            )
            for row in _causal_order(rows)
        ]

    @get("/sagas", operation_id="listSagas", tags=["sagas"])
    async def sagas(
        status: Annotated[
            str | None,
            QueryParameter(
                description="RUNNING, COMPENSATING, COMPLETED, COMPENSATED, or STUCK",
                pattern="^(RUNNING|COMPENSATING|COMPLETED|COMPENSATED|STUCK)$",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[SagaView]:
        """Sagas with their current step and age; a saga past the deadline is stuck."""
        now = time.time()
        query = select(TrackedSagaRow)
        if status == "STUCK":
            query = query.where(
                col(TrackedSagaRow.status).not_in(TERMINAL),
                col(TrackedSagaRow.started_at) < now - stuck_after,
            )
        elif status is not None:
            query = query.where(TrackedSagaRow.status == status)
        query = query.order_by(col(TrackedSagaRow.started_at).desc()).limit(limit)
        async with AsyncSession(db.reader) as session:
            rows = list(await session.exec(query))
        return [
            SagaView(
                order_id=row.saga_id,
                status=row.status,
                step=row.step,
                last_message=row.last_type,
                started_at=_when(row.started_at),
                updated_at=_when(row.updated_at),
                age_seconds=round(now - row.started_at, 3),
                stuck=row.status not in TERMINAL and now - row.started_at > stuck_after,
            )
            for row in rows
        ]

    return [timeline, sagas]
