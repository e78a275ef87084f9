"""HTTP routes of checkout: a saga's audit trail and the list of sagas."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import QueryParameter
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from checkout.causality import causal_order
from checkout.contract import SagaResolved
from checkout.db import TimelineRow, TrackedSagaRow
from checkout.definition import Definitions, Role, SagaDefinition
from web.http import problems
from web.limits import IdPath

__all__ = [
    "SagaDetail",
    "SagaView",
    "StepView",
    "TimelineEntry",
    "checkout_routes",
    "read_saga_detail",
]

TERMINAL = ("COMPLETED", "COMPENSATED")
# Parked sagas are reported once, when they park, and listed as PARKED: not as stuck.
NOT_STUCK = (*TERMINAL, "PARKED")


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


class StepView(msgspec.Struct):
    """One step of one saga: what was done, what was undone, what was not."""

    name: str
    kind: str
    module: str
    # not run, in flight, done, failed, undone, not undone (done, and its undo pending)
    outcome: str
    done: bool
    undone: bool
    last_error: str | None


class SagaDetail(msgspec.Struct):
    order_id: str
    status: str
    style: str
    definition_version: int
    step: str
    started_at: datetime
    updated_at: datetime
    steps: list[StepView]
    # What operators did by hand (resolve notes), oldest first.
    notes: list[str]


def _step_views(
    definition: SagaDefinition, status: str, rows: list[tuple[str, bytes]]
) -> list[StepView]:
    seen: dict[str, set[Role]] = {}
    errors: dict[str, str] = {}
    for type_name, payload in rows:
        found = definition.role(type_name)
        if found is None:
            continue
        step, role = found
        seen.setdefault(step.name, set()).add(role)
        if role in (Role.FAILED, Role.COMPENSATION_FAILED):
            errors[step.name] = str(msgspec.json.decode(payload).get("reason"))
    undoing = status in ("COMPENSATING", "PARKED", "COMPENSATED")
    views = []
    for step in definition.steps:
        roles = seen.get(step.name, set())
        done = Role.SUCCEEDED in roles
        undone = Role.COMPENSATED in roles
        if undone:
            outcome = "undone"
        elif done and undoing and step.compensation is not None:
            outcome = "not undone"
        elif done:
            outcome = "done"
        elif Role.FAILED in roles:
            outcome = "failed"
        elif Role.ACTION in roles:
            outcome = "in flight"
        else:
            outcome = "not run"
        views.append(StepView(step.name, str(step.kind), step.module, outcome, done, undone,
                              errors.get(step.name)))  # fmt: skip
    return views


def _causal_order(rows: list[TimelineRow]) -> list[TimelineRow]:
    return causal_order(
        rows,
        message_id=lambda row: row.message_id,
        causation_id=lambda row: row.causation_id,
        at=lambda row: row.occurred_at,
    )


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def read_saga_detail(
    definitions: Definitions, order_id: str, conn: sqlite3.Connection
) -> SagaDetail | None:
    """One saga's detail as ``GET /sagas/{id}`` gives it (the dashboard reads it too)."""
    tracked = conn.execute(
        "SELECT status, step, definition_version, started_at, updated_at"
        " FROM tracked_sagas WHERE saga_id = ?",
        (order_id,),
    ).fetchone()
    if tracked is None:
        return None
    owned = conn.execute("SELECT status, step FROM sagas WHERE saga_id = ?", (order_id,)).fetchone()
    status, step, version, started_at, updated_at = tracked
    if owned is not None:
        status, step = owned  # the orchestrator's row is the truth
    rows = conn.execute(
        "SELECT type, payload FROM timeline WHERE saga_id = ? ORDER BY occurred_at",
        (order_id,),
    ).fetchall()
    definition = definitions.version(version or definitions.current.version)
    notes = [
        str(msgspec.json.decode(payload)["note"])
        for type_name, payload in rows
        if type_name == SagaResolved.TYPE
    ]
    return SagaDetail(
        order_id=order_id, status=status,
        style="orchestration" if owned is not None else "choreography",
        definition_version=definition.version, step=step,
        started_at=_when(started_at), updated_at=_when(updated_at),
        steps=_step_views(definition, status, rows), notes=notes,
    )  # fmt: skip


def checkout_routes(
    db: Database, definitions: Definitions, *, stuck_after: float
) -> list[HTTPRouteHandler]:
    """Build checkout's read routes over its database."""

    @get("/orders/{order_id:str}/timeline", operation_id="getTimeline", tags=["orders"],
         responses=problems(404))  # fmt: skip
    async def timeline(order_id: IdPath) -> list[TimelineEntry]:
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
                description="RUNNING, COMPENSATING, PARKED, COMPLETED, COMPENSATED, or STUCK",
                pattern="^(RUNNING|COMPENSATING|PARKED|COMPLETED|COMPENSATED|STUCK)$",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[SagaView]:
        """Sagas with their current step and age; a saga past the deadline is stuck."""
        now = time.time()
        query = select(TrackedSagaRow)
        if status == "STUCK":
            query = query.where(
                col(TrackedSagaRow.status).not_in(NOT_STUCK),
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
                stuck=row.status not in NOT_STUCK and now - row.started_at > stuck_after,
            )
            for row in rows
        ]

    @get("/sagas/{order_id:str}", operation_id="getSaga", tags=["sagas"],
         responses=problems(404))  # fmt: skip
    async def saga(order_id: IdPath) -> SagaDetail:
        """One saga: its status, style and definition version, and each step with what was
        done, what was undone, what was not, and its last error."""

        detail = db.read_now(partial(read_saga_detail, definitions, order_id))
        if detail is None:
            raise NotFoundException(f"no saga for order {order_id}")
        return detail

    return [timeline, sagas, saga]
