"""A module's SQLite database: one writer connection, and many callers sharing
one commit (group commit).

Why not one ``await`` per statement: every statement through an async driver
is a round trip to the connection's thread, which caps a writer at a few
thousand transactions per second, far below what SQLite does (see
``../shared/FACTS.md``). Here a transaction is a plain function over a
``sqlite3`` connection; the committer runs every queued function on the event
loop, each inside its own SAVEPOINT (a failing job rolls back alone), and
commits once, in a thread (the COMMIT waits for the disk; the statements do
not, and running them in a thread cost a GIL hand-off each). A caller's
``await`` returns only after that COMMIT, so nothing is acknowledged before it
is durable to the configured ``synchronous`` level.

Pragmas: WAL so readers never block the writer and a process crash loses no
committed transaction; ``synchronous=FULL`` by default (durable across power
loss: the WAL is synced on every commit), ``NORMAL`` as a setting (durable
across a process crash only, see README "Durability"); ``BEGIN
IMMEDIATE`` so the write lock is taken up front instead of failing at the first
write when another connection (a reader upgrading, an operator's shell) holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import msgspec
from sqlalchemy import Connection, MetaData, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bus.faults import CrashPoints, point_names
from bus.messages import ENVELOPE_COLUMNS, Envelope, Message, channel, envelope_row, new_id
from telemetry import metrics, tracing

__all__ = ["Database", "Outcome", "Tx"]

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 512
# How long a writer waits for another connection's write lock, in seconds.
BUSY_TIMEOUT = 10.0
_INSERT_OUTBOX = (
    f"INSERT INTO outbox ({', '.join(ENVELOPE_COLUMNS)})"  # noqa: S608 - constant
    f" VALUES ({', '.join('?' for _ in ENVELOPE_COLUMNS)})"
)


class Outcome(Generic[T]):
    """The result of one job in a group commit: a value or the error it raised."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: T | None = None
        self.error: BaseException | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class Tx:
    """One job's view of the shared transaction: run SQL, emit messages.

    ``emit`` writes the message to the outbox in this same transaction; the
    relay publishes it only after the commit. ``cause`` is the envelope being
    handled, if any: emitted messages record it as their causation and carry
    its saga context along. ``trace`` is the trace context of the span the
    job runs in (the caller's, or the handler's), which emitted messages carry.
    """

    __slots__ = ("_db", "cause", "conn", "context", "emitted", "error", "now", "trace")

    def __init__(
        self,
        db: Database,
        conn: sqlite3.Connection,
        cause: Envelope | None,
        trace: tracing.TraceContext = (None, None),
    ) -> None:
        self._db = db
        self.trace = trace
        # The error a consumer's handler failed with, if any (for its span).
        self.error: BaseException | None = None
        self.conn = conn
        self.cause = cause
        # The saga context that emitted messages carry on (see Envelope.context).
        self.context = cause.context if cause is not None else None
        self.emitted: list[Envelope] = []
        self.now = db.clock()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def emit(
        self,
        message: Message,
        *,
        message_id: str | None = None,
        context: bytes | None = None,
    ) -> Envelope:
        cause = self.cause
        message_id = message_id or new_id(self.now)
        payload = msgspec.json.encode(message)
        if context is None:
            context = self.context
        if context is None and cause is None and self._db.context_for is not None:
            context = self._db.context_for(self, message, payload)
        trace: tracing.TraceContext = (None, None)
        if tracing.ENABLED:
            trace = tracing.message_created(
                self.trace, destination=channel(message), message_type=message.TYPE,
                message_id=message_id, order_id=message.key, module=self._db.name,
                compensation=message.COMPENSATION,
            )  # fmt: skip
        envelope = Envelope(
            message_id,
            message.TYPE,
            message.VERSION,
            message.key,
            cause.message_id if cause is not None else None,
            self._db.name,
            self.now,
            payload,
            message,
            context,
            traceparent=trace[0],
            tracestate=trace[1],
        )
        cursor = self.conn.execute(_INSERT_OUTBOX, envelope_row(envelope))
        # The row number is known only now; the envelope is not shared yet.
        object.__setattr__(envelope, "seq", cursor.lastrowid or 0)
        self.emitted.append(envelope)
        for hook in self._db.emit_hooks:
            hook(self, envelope)
        return envelope


def _add_missing_columns(connection: Connection, metadata: MetaData) -> None:
    """Add the nullable columns a newer build declares to tables an older one created."""
    for table in metadata.sorted_tables:
        have = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table.name})")}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(connection.dialect)
                connection.exec_driver_sql(
                    f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                )


def _add_missing_indexes(connection: Connection, metadata: MetaData) -> None:
    """Create the indexes a newer build declares on tables an older one created."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)


class _Job:
    __slots__ = ("cause", "fn", "outcome", "trace")

    def __init__(self, fn: Callable[[Tx], Any], cause: Envelope | None) -> None:
        self.fn = fn
        self.cause = cause
        self.outcome: Outcome[Any] = Outcome()
        # The caller's span (an HTTP request): the job runs later, in the committer's task.
        self.trace = tracing.current() if tracing.ENABLED else (None, None)


class _Group:
    __slots__ = ("atomic", "done", "jobs", "lingering")

    def __init__(
        self,
        jobs: list[_Job],
        done: asyncio.Event | None = None,
        *,
        atomic: bool = False,
        lingering: bool = False,
    ) -> None:
        self.jobs = jobs
        # Waits for another group's commit, or for the linger timer (see ``submit``).
        self.lingering = lingering
        # Set after the commit, for a caller that waits (none in direct mode or for submit).
        self.done = done
        # One savepoint for the whole group: its jobs stand or fall together.
        self.atomic = atomic


class _CommitThread:
    """One thread that runs a database's COMMITs, handed over with as little as can be.

    A ``ThreadPoolExecutor`` plus ``asyncio.wrap_future`` costs the event loop two
    futures, a condition, two locks and a chain of callbacks per call: about a
    quarter of a commit's cost to the loop (``python -m bench.commit_cost``). Here: a queue
    put, and one ``call_soon_threadsafe`` back. ``stop`` waits for the COMMIT in
    progress (never abandoned: its callers then get their results).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], None], asyncio.Future[None], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        # A daemon: a process that exits without closing its database is not held
        # up by it (a COMMIT cut off there is rolled back, as after a crash).
        self._thread = threading.Thread(target=self._work, name=f"commit-{name}", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Run ``fn`` in the thread; the future is done when it has returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return future

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            error: BaseException | None = None
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            with suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _owner_only(path: Path) -> None:
    """Create the database file readable by its owner only (or tighten an existing one).

    SQLite creates the WAL and shared-memory files with the main file's
    permissions, so they follow; existing ones are tightened as well.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        if file.exists():
            os.chmod(file, 0o600)


class Database:
    """A module's own SQLite file, written through a single group-committing writer."""

    def __init__(
        self,
        path: Path,
        name: str,
        metadata: MetaData,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        crash_points: CrashPoints | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = path
        self.name = name
        self.metadata = metadata
        self.synchronous = synchronous
        self.clock = clock
        self.crash_points = crash_points
        self.commit_hooks: list[Callable[[list[Envelope]], None]] = []
        # Called for each message a job emits, in the job's transaction, once its
        # outbox row is written (the saga tracker records checkout's own messages
        # where they are made instead of reading them back from the outbox).
        self.emit_hooks: list[Callable[[Tx, Envelope], None]] = []
        # Gives a message emitted outside any handler its saga context (set by
        # the composition root in choreography; see checkout.choreography).
        self.context_for: Callable[[Tx, Message, bytes], bytes | None] | None = None
        # Set by the relay: waits until envelopes are durably with the transport.
        self.wait_delivered: Callable[[Sequence[Envelope], float], Awaitable[bool]] | None = None
        self.commits = 0
        # Direct mode (the deterministic simulation, tests/sim): every call runs
        # inline on the caller's thread, no committer task, no thread hop.
        self.direct = False
        # WAL lets readers run beside the writer; the simulation (one connection,
        # crashes that are only ever process crashes) sets a cheaper one.
        self.journal_mode = "WAL"
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Group] = []
        # asyncio's events (this module already waits on asyncio futures): anyio's
        # look its backend up on every construction, twice per batch here.
        self._wakeup = asyncio.Event()
        # The timer that commits lingering jobs (``submit``) if nothing else does first.
        self._linger: asyncio.TimerHandle | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._commit_thread: _CommitThread | None = None
        self._stack: AsyncExitStack | None = None
        self._reader: AsyncEngine | None = None
        self._read_conn: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.direct:
            self._open()
            self._stack = AsyncExitStack()
            self._stack.callback(self._close)
            return self
        await anyio.to_thread.run_sync(self._open)
        # Unwound in reverse: stop the committer (a batch already in the thread
        # runs to its end), then dispose the reader, then close the writer.
        stack = AsyncExitStack()
        stack.callback(self._close)
        self._commit_thread = _CommitThread(self.name)
        stack.callback(self._commit_thread.stop)
        stack.push_async_callback(self._dispose_reader)
        task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(task_group.cancel_scope.cancel)
        stack.push_async_callback(self._flush)
        task_group.start_soon(self._committer)
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        await self._stack.aclose()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The simulation reopens its files after every crash: their schema is there.
        reopened = self.direct and self.path.exists()
        _owner_only(self.path)
        if not reopened:
            engine = create_engine(f"sqlite:///{self.path}")
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                self.metadata.create_all(engine)
                with engine.begin() as connection:
                    _add_missing_columns(connection, self.metadata)
                    _add_missing_indexes(connection, self.metadata)
            finally:
                engine.dispose()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        # No busy wait on the event loop: a locked database is waited for in a
        # thread (``_begin_waiting``); once BEGIN IMMEDIATE holds the write
        # lock, nothing in a WAL transaction waits for another connection.
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA foreign_keys=ON")
        # Savepoint journals in memory: a consumer's batch is one savepoint over
        # many handlers, whose journal would spill to a temporary file past 64 KiB.
        conn.execute("PRAGMA temp_store=MEMORY")
        self._conn = conn

    def _close(self) -> None:
        self._cancel_linger()
        for conn in (self._conn, self._read_conn):
            if conn is not None:
                conn.close()
        self._conn = self._read_conn = None

    # -- transactions ----------------------------------------------------------

    async def transact(self, fn: Callable[[Tx], T], *, cause: Envelope | None = None) -> T:
        """Run ``fn`` in a transaction and return its result once committed."""
        (outcome,) = await self.run_all([(fn, cause)])
        return outcome.unwrap()  # type: ignore[no-any-return]

    async def transact_delivered(self, fn: Callable[[Tx], T], *, limit: float = 5.0) -> T:
        """Like ``transact``, then wait (up to ``limit`` s) until the transport has the
        messages ``fn`` emitted: in process, until every subscriber has handled them.

        For writes whose readers are in other modules (a product's price, which
        the order module copies): the caller's next request sees them there.
        """

        def job(tx: Tx) -> tuple[T, list[Envelope]]:
            return fn(tx), list(tx.emitted)

        result, envelopes = await self.transact(job)
        if self.wait_delivered is not None and envelopes:
            await self.wait_delivered(envelopes, limit)
        return result

    async def run_all(
        self, calls: Sequence[tuple[Callable[[Tx], Any], Envelope | None]], *, atomic: bool = False
    ) -> list[Outcome[Any]]:
        """Run each call in its own savepoint of a shared transaction; never raises for a job.

        ``atomic``: one savepoint for all the calls instead (a consumer's batch,
        whose handlers keep their own): if one raises, none of them stands, and
        each outcome carries that error.
        """
        jobs = [_Job(fn, cause) for fn, cause in calls]
        if self.direct:
            self._queue.append(_Group(jobs, atomic=atomic))
            self.run_queued()
            return [job.outcome for job in jobs]
        done = asyncio.Event()
        self._queue.append(_Group(jobs, done, atomic=atomic))
        self._wakeup.set()
        await done.wait()
        return [job.outcome for job in jobs]

    def run_queued(self) -> None:
        """Direct mode: commit whatever is queued now (``submit``'s jobs ride along)."""
        batch, self._queue = self._queue, []
        if batch:
            envelopes = self._run_batch(batch)
            if envelopes:
                for hook in self.commit_hooks:
                    hook(envelopes)

    def submit(self, fn: Callable[[Tx], Any], *, linger: float = 0.0) -> None:
        """Queue a job without waiting for it (bookkeeping that rides with the next commit).

        ``linger``: commit it at the latest that many seconds from now, and
        sooner with whatever commits first. Bookkeeping whose delay loses
        nothing (the relay's "dispatched" marks) then costs no commit of its
        own while other work commits, where an immediate wakeup would cost one
        (an fsync at FULL) for each commit that emitted messages.
        """
        self._queue.append(_Group([_Job(fn, None)], lingering=linger > 0))
        if self.direct:
            return
        if linger <= 0:
            self._wakeup.set()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(linger, self._linger_over)

    def _linger_over(self) -> None:
        """The linger is up: what waits now commits like any other job."""
        self._linger = None
        for group in self._queue:
            group.lingering = False
        self._wakeup.set()

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _must_commit(self) -> bool:
        return not all(group.lingering for group in self._queue)  # False when empty too

    async def _flush(self) -> None:
        """On the way out: commit what lingers (a clean stop leaves no mark behind)."""
        if self._queue:
            with anyio.move_on_after(BUSY_TIMEOUT, shield=True):
                await self.run_all([])

    async def _committer(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = asyncio.Event()
            while self._must_commit():
                batch = self._take_batch()
                if not self._queue:  # whatever lingered rides with this commit
                    self._cancel_linger()
                envelopes: list[Envelope] = []
                try:
                    envelopes = await self._run_batch_async(batch)
                finally:
                    for group in batch:
                        if group.done is not None:
                            group.done.set()
                if envelopes:
                    for hook in self.commit_hooks:
                        hook(envelopes)

    def _take_batch(self) -> list[_Group]:
        taken = 0
        for index, group in enumerate(self._queue):
            taken += len(group.jobs)
            if taken >= MAX_BATCH:
                batch, self._queue = self._queue[: index + 1], self._queue[index + 1 :]
                return batch
        batch, self._queue = self._queue, []
        return batch

    def _run_batch(self, batch: list[_Group]) -> list[Envelope]:
        """Direct mode: the whole transaction on the caller's thread."""
        jobs = [job for group in batch for job in group.jobs]
        started = time.perf_counter()
        try:
            self._begin()
            emitted = self._run_jobs(batch)
            if emitted is None:
                return []  # its one group failed and is rolled back: nothing to commit
            self._commit()
        except BaseException as exc:
            self._failed(jobs, exc)
            if not isinstance(exc, Exception):
                raise
            return []
        return self._committed(jobs, emitted, started)

    async def _run_batch_async(self, batch: list[_Group]) -> list[Envelope]:
        """The statements on the event loop, the COMMIT (the fsync) in a thread.

        The jobs are short synchronous functions over SQLite; running them in
        a worker thread made every statement give the GIL to the event loop
        and wait to get it back (a futex round trip per statement, a third of
        the process's CPU in the kernel). Only the COMMIT, which waits for the
        disk, leaves the loop. One batch at a time, so the connection is never
        used by two threads at once.
        """
        jobs = [job for group in batch for job in group.jobs]
        started = time.perf_counter()
        try:
            try:
                self._begin()
            except sqlite3.OperationalError:
                # Another connection holds the write lock (an operator's shell):
                # wait for it in a thread, never on the loop.
                await anyio.to_thread.run_sync(self._begin_waiting, limiter=self._limiter)
            emitted = self._run_jobs(batch)
            if emitted is None:
                return []  # its one group failed and is rolled back: nothing to commit
            # On a thread of its own (``_CommitThread``: anyio's worker threads and
            # a plain executor cost more per call), and never abandoned: a shutdown
            # waits for the COMMIT, whose callers then get their results
            # (tests/test_bus.py).
            assert self._commit_thread is not None
            with anyio.CancelScope(shield=True):
                await self._commit_thread.run(self._commit)
        except BaseException as exc:
            self._failed(jobs, exc)
            if not isinstance(exc, Exception):
                raise
            return []
        return self._committed(jobs, emitted, started)

    def _begin(self) -> None:
        assert self._conn is not None, "database is not open"
        self._conn.execute("BEGIN IMMEDIATE")

    def _begin_waiting(self) -> None:
        assert self._conn is not None, "database is not open"
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    def _run_jobs(self, batch: list[_Group]) -> list[Envelope] | None:
        """Run the batch's jobs in the open transaction; what they emitted, or None if
        the batch was one group run alone that failed (the transaction is rolled back)."""
        conn = self._conn
        assert conn is not None, "database is not open"
        if len(batch) == 1 and (batch[0].atomic or len(batch[0].jobs) == 1):
            # The transaction's only group needs no savepoint: the transaction is one
            # (two statements fewer per commit, and every commit is one group at low load).
            alone = self._together(conn, batch[0].jobs, savepoint=False)
            if alone and self.crash_points is not None:
                self._crash_point("before-commit", alone)
            return alone
        emitted: list[Envelope] = []
        for group in batch:
            if group.atomic:
                emitted.extend(self._run_atomic(conn, group.jobs))
                continue
            for job in group.jobs:
                tx = Tx(self, conn, job.cause, job.trace)
                conn.execute("SAVEPOINT job")
                try:
                    job.outcome.value = job.fn(tx)
                except Exception as exc:  # noqa: BLE001 - handed to the job's caller
                    conn.execute("ROLLBACK TO job")
                    job.outcome.error = exc
                else:
                    emitted.extend(tx.emitted)
                conn.execute("RELEASE job")
        if self.crash_points is not None and emitted:
            self._crash_point("before-commit", emitted)
        return emitted

    def _run_atomic(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[Envelope]:
        conn.execute("SAVEPOINT job")
        emitted = self._together(conn, jobs, savepoint=True)
        conn.execute("RELEASE job")
        return emitted or []

    def _together(
        self, conn: sqlite3.Connection, jobs: list[_Job], *, savepoint: bool
    ) -> list[Envelope] | None:
        """Run jobs that stand or fall together: what they emitted, or None if one raised
        (then every job carries that error, and what they did is rolled back: to the
        ``savepoint`` named ``job``, or the whole transaction)."""
        emitted: list[Envelope] = []
        try:
            for job in jobs:
                tx = Tx(self, conn, job.cause, job.trace)
                job.outcome.value = job.fn(tx)
                emitted.extend(tx.emitted)
        except Exception as exc:  # noqa: BLE001 - handed to every job of the group
            if savepoint:
                conn.execute("ROLLBACK TO job")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in jobs:
                job.outcome.value = None
                job.outcome.error = exc
            return None
        return emitted

    def _commit(self) -> None:
        assert self._conn is not None, "database is not open"
        self._conn.execute("COMMIT")

    def _failed(self, jobs: list[_Job], exc: BaseException) -> None:
        """Roll back and hand ``exc`` to every job that has no error of its own."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        for job in jobs:
            if job.outcome.error is None:
                job.outcome.value = None
                job.outcome.error = exc
        if isinstance(exc, Exception):
            log.error("commit failed on %s", self.name, exc_info=exc)

    def _committed(
        self, jobs: list[_Job], emitted: list[Envelope], started: float
    ) -> list[Envelope]:
        self.commits += 1
        metrics.committed(self.name, len(jobs), time.perf_counter() - started)
        if self.crash_points is not None and emitted:
            self._crash_point("after-commit", emitted)
        return emitted

    def _crash_point(self, kind: str, emitted: Sequence[Envelope]) -> None:
        assert self.crash_points is not None
        self.crash_points.reached(*point_names(kind, self.name, (e.type for e in emitted)))

    # -- reads -----------------------------------------------------------------

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a small read on the event loop, on a read-only connection of its own.

        For the hot point reads of the HTTP API (an order by its primary key):
        a few microseconds of SQLite, where an async ORM read costs hundreds of
        microseconds of Python and thread hops (see bench/README.md). In WAL
        mode a reader never waits for the writer, so this does not block on it.
        """
        if self._read_conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._read_conn = conn
        return fn(self._read_conn)

    @property
    def reader(self) -> AsyncEngine:
        """An async engine (aiosqlite) for reads; WAL lets them run beside the writer."""
        if self._reader is None:
            self._reader = create_async_engine(f"sqlite+aiosqlite:///{self.path}")
        return self._reader

    async def _dispose_reader(self) -> None:
        if self._reader is not None:
            await self._reader.dispose()
            self._reader = None
