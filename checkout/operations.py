"""Operator control over HTTP: retry or abort a saga, and see, replay or discard dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody, PathParameter, QueryParameter

from bus.consumer import Consumer
from bus.sqlite import Database, Tx
from checkout.contract import AbortSaga, ResolveSaga, RetrySaga
from checkout.db import TRACE_COLUMNS
from telemetry import tracing
from web.http import problems, strict_body
from web.limits import TEXT_PATTERN, IdPath, Text

__all__ = [
    "AbortRequest",
    "DeadLetterView",
    "SagaActionAccepted",
    "dead_letter_routes",
    "operations_routes",
    "saga_action_routes",
]


class AbortRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Text = "aborted by operator"


class ResolveRequest(msgspec.Struct, forbid_unknown_fields=True):
    note: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=500, pattern=TEXT_PATTERN,
            description="1..500 printable characters",
        ),
    ]  # fmt: skip


class SagaActionAccepted(msgspec.Struct):
    order_id: str
    action: str
    message_id: str


class DeadLetterView(msgspec.Struct):
    id: str
    consumer: str
    status: str
    type: str
    message_id: str
    order_id: str
    error: str | None
    attempts: int
    first_failed_at: datetime
    next_attempt_at: datetime | None
    dead_at: datetime | None
    data: Any


LetterId = Annotated[
    str,
    PathParameter(
        min_length=3, max_length=64, pattern=r"^[a-z]+:[0-9]+$(?!\n)",
        description="the consumer and the row number, e.g. inventory:12",
    ),
]  # fmt: skip


def _when(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


async def _dead_letters(consumer: Consumer, status: str, limit: int) -> list[DeadLetterView]:
    def read(tx: Tx) -> list[Any]:
        return tx.execute(
            "SELECT id, status, type, message_id, correlation_id, error, attempts,"
            " first_failed_at, next_attempt_at, dead_at, payload FROM dead_letter"
            " WHERE consumer = ? AND (? = 'ALL' OR status = ?) ORDER BY id LIMIT ?",
            (consumer.name, status, status, limit),
        ).fetchall()

    return [
        DeadLetterView(
            id=f"{consumer.name}:{r[0]}", consumer=consumer.name, status=r[1], type=r[2],
            message_id=r[3], order_id=r[4], error=r[5], attempts=r[6],
            first_failed_at=datetime.fromtimestamp(r[7], UTC),
            next_attempt_at=_when(r[8]), dead_at=_when(r[9]), data=msgspec.json.decode(r[10]),
        )
        for r in await consumer.db.transact(read)
    ]  # fmt: skip


def operations_routes(checkout: Database, consumers: Sequence[Consumer]) -> list[HTTPRouteHandler]:
    """Build the operator routes; dead letters of every consumer in this process."""
    return [*saga_action_routes(checkout), *dead_letter_routes(consumers)]


def saga_action_routes(checkout: Database) -> list[HTTPRouteHandler]:
    """Retry, abort or resolve a saga, by sending checkout a command (recorded in the timeline)."""

    async def _send(
        order_id: str, command: RetrySaga | AbortSaga | ResolveSaga, allowed: tuple[str, ...]
    ) -> Response[SagaActionAccepted]:
        action = command.TYPE.partition(".")[2].removesuffix("Saga").lower()

        def write(tx: Tx) -> tuple[str | None, str | None]:
            # The orchestrator's row is the truth where there is one; else the tracker's.
            row = tx.one(
                f"SELECT status, step, {TRACE_COLUMNS} FROM sagas WHERE saga_id = ?",  # noqa: S608
                (order_id,),
            )
            row = row or tx.one(
                f"SELECT status, step, {TRACE_COLUMNS} FROM tracked_sagas WHERE saga_id = ?",  # noqa: S608
                (order_id,),
            )
            if row is None or row[0] not in allowed:
                return None, None if row is None else str(row[0])
            status, step, *trace = row
            if tracing.ENABLED:  # the action joins the order's trace; the request is linked
                undoing = action != "retry" or status != "RUNNING"
                tx.trace = tracing.saga_moved(
                    tuple(trace),
                    f"operator {action}",
                    order_id=order_id,
                    module="checkout",
                    step=step,
                    compensation=undoing,
                    link=tx.trace,
                )
            return tx.emit(command).message_id, str(status)

        message_id, status = await checkout.transact(write)
        if status is None:
            raise NotFoundException(f"no saga for order {order_id}")
        if message_id is None:
            raise ClientException(
                f"cannot {action} a {status} saga (only {' or '.join(allowed)})", status_code=409
            )
        accepted = SagaActionAccepted(order_id, command.TYPE.partition(".")[2], message_id)
        return Response(accepted, status_code=202)

    @post("/sagas/{order_id:str}/retry", status_code=202, operation_id="retrySaga", tags=["sagas"],
          responses=problems(404, 409))  # fmt: skip
    async def retry(order_id: IdPath) -> Response[SagaActionAccepted]:
        """Send the saga's current step again, or resume a PARKED compensation where it
        stopped; recorded in its timeline, harmless if repeated. 409 once it has finished."""
        return await _send(order_id, RetrySaga(order_id=order_id), _UNFINISHED)

    @post("/sagas/{order_id:str}/abort", status_code=202, operation_id="abortSaga", tags=["sagas"],
          responses=problems(404, 409))  # fmt: skip
    async def abort(
        order_id: IdPath, data: JSONBody[AbortRequest | None] = None
    ) -> Response[SagaActionAccepted]:
        """Compensate a running saga now; a no-op once it finished or shipped."""
        reason = (data or AbortRequest()).reason
        return await _send(order_id, AbortSaga(order_id=order_id, reason=reason), _ANY)

    @post("/sagas/{order_id:str}/resolve", status_code=202, operation_id="resolveSaga",
          tags=["sagas"], responses=problems(404, 409))  # fmt: skip
    async def resolve(
        order_id: IdPath, data: JSONBody[ResolveRequest], request: Request[Any, Any, Any]
    ) -> Response[SagaActionAccepted]:
        """Record that a person did a PARKED compensation by hand, outside the system; the
        saga then undoes the steps before it and ends compensated. 409 unless PARKED."""
        data = await strict_body(request, ResolveRequest)
        return await _send(order_id, ResolveSaga(order_id=order_id, note=data.note), ("PARKED",))

    return [retry, abort, resolve]


_UNFINISHED = ("RUNNING", "COMPENSATING", "PARKED")
_ANY = (*_UNFINISHED, "COMPLETED", "COMPENSATED")


def dead_letter_routes(consumers: Sequence[Consumer]) -> list[HTTPRouteHandler]:
    """Dead letters of every consumer in this process: list, replay, discard."""
    by_name = {consumer.name: consumer for consumer in consumers}

    @get("/dead-letters", operation_id="listDeadLetters", tags=["dead letters"])
    async def dead_letters(
        status: Annotated[
            str,
            QueryParameter(pattern="^(RETRYING|DEAD|DELIVERED|DISCARDED|ALL)$"),
        ] = "DEAD",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[DeadLetterView]:
        """Messages a handler could not process: DEAD ones (the default), or by status."""
        views: list[DeadLetterView] = []
        for consumer in consumers:
            views += await _dead_letters(consumer, status, limit)
        return views[:limit]

    def _find(letter_id: str) -> tuple[Consumer, int]:
        name, _, number = letter_id.rpartition(":")
        if name not in by_name or not number.isdigit():
            raise NotFoundException(f"no dead letter {letter_id}")
        return by_name[name], int(number)

    async def _act(letter_id: str, action: str) -> dict[str, str]:
        consumer, row_id = _find(letter_id)
        act = consumer.replay if action == "replay" else consumer.discard
        status = await act(row_id)
        if status is None:
            raise NotFoundException(f"no dead letter {letter_id}")
        return {"id": letter_id, "status": status}

    @post("/dead-letters/{letter_id:str}/replay", operation_id="replayDeadLetter",
          tags=["dead letters"], status_code=200, responses=problems(404))  # fmt: skip
    async def replay(letter_id: LetterId) -> dict[str, str]:
        """Try a DEAD message again; replaying twice, or after it went through, changes nothing."""
        return await _act(letter_id, "replay")

    @post("/dead-letters/{letter_id:str}/discard", operation_id="discardDeadLetter",
          tags=["dead letters"], status_code=200, responses=problems(404))  # fmt: skip
    async def discard(letter_id: LetterId) -> dict[str, str]:
        """Give up on a parked message; the order's later messages then go on."""
        return await _act(letter_id, "discard")

    return [dead_letters, replay, discard]
