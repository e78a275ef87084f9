"""The local transport: processes on one machine, each subscription reading the
modules' outboxes directly.

A module's outbox is already a log: rows committed in ``seq`` order
(``AUTOINCREMENT``: never reused), kept until retention prunes them after the
dedup window. So where Kafka copies each committed row into a topic, here a
subscription reads it where it is, through a read-only connection to the
module's file (WAL: a reader never waits for the writer, in this process or
another). Each subscription keeps one position per source database, as a
Kafka consumer group keeps its offsets: in a small file of the transport's
state directory, written at most once per ``commit_interval`` and only for
batches already handled, so a crash redelivers what was handled since, and
the consumers' inboxes drop it. Delivery is therefore at least once, in
``seq`` order per source (so in publish order for the messages of one order
that one module emits), like Kafka's per-partition order.

Nothing polls fast: after each commit the relay's ``publish`` wakes the
readers of the emitted types in this process and sends one datagram naming
the source and those types to every other process of the same state
directory (abstract Unix sockets, listed as files under ``peers/``). A slow
poll (``poll_interval``) covers a process that started after the datagram
was sent.

Meant for one machine (the files are shared); across machines, Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from bus.messages import ENVELOPE_COLUMNS, Envelope, MessageRegistry, envelope_from_row
from bus.ports import BatchHandler, DeliveredCallback
from bus.retry import backoff

__all__ = ["LocalTransport", "SourceMismatchError", "SubscriptionTakenError", "database_file"]

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(ENVELOPE_COLUMNS)


def database_file(data_dir: Path, module: str) -> Path:
    """Where a module keeps its database in ``data_dir``: how the readers of the other
    processes find it (each module's build follows it; ``LocalTransport.check`` holds
    the modules of this process to it)."""
    return data_dir / f"{module}.sqlite3"


class SourceMismatchError(Exception):
    """A module's database is not the file the local bus reads for it."""


class SubscriptionTakenError(Exception):
    """Another process runs this subscription on the same state directory."""


class _Reader:
    """One subscription's position in one source's outbox."""

    __slots__ = ("conn", "path", "position", "query", "saved", "source", "sub", "wakeup")

    def __init__(self, sub: _Subscription, source: str, path: Path, position: int) -> None:
        self.sub = sub
        self.source = source
        self.path = path
        self.position = position
        self.saved = position
        self.conn: sqlite3.Connection | None = None
        self.wakeup = anyio.Event()
        # One statement: the rows of the subscription's types and the last row of the
        # log (whatever its type), so that the position passes the rows it skips.
        where = ""
        if sub.types is not None:
            where = (
                f" AND (type IN ({', '.join('?' for _ in sub.types)})"  # noqa: S608 - placeholders
                " OR seq = (SELECT max(seq) FROM outbox))"
            )
        self.query = (
            f"SELECT seq, {_COLUMNS} FROM outbox"  # noqa: S608 - constants and placeholders
            f" WHERE seq > ?{where} ORDER BY seq LIMIT ?"
        )

    def fetch(self, limit: int) -> tuple[list[Any], int, bool]:
        """The next rows of the subscription's types, the position after them, and
        whether the read stopped at ``limit`` (the log may hold more right now).

        A snapshot of the log holds every row up to its last one: rows are numbered
        in commit order (one writer, ``AUTOINCREMENT``), so the position never passes
        a row that a later read could still see.
        """
        conn = self.conn
        if conn is None:
            if not self.path.exists():
                return [], self.position, False
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            self.conn = conn
        params: list[Any] = [self.position]
        if self.sub.types is not None:
            params.extend(self.sub.types)
        params.append(limit)
        try:
            rows = conn.execute(self.query, params).fetchall()
        except sqlite3.OperationalError as exc:  # the module is creating its schema
            log.debug("local bus: %s not readable yet: %r", self.path, exc)
            return [], self.position, False
        if not rows:
            return [], self.position, False
        end, full = rows[-1][0], len(rows) == limit
        wanted = self.sub.wanted
        if wanted is not None and rows[-1][2] not in wanted:
            rows.pop()  # the log's last row, read for its number only
        return rows, end, full

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Subscription:
    __slots__ = ("handler", "name", "readers", "types", "wanted")

    def __init__(self, name: str, types: Collection[str] | None, handler: BatchHandler) -> None:
        self.name = name
        self.types = None if types is None else tuple(sorted(types))
        self.wanted = None if types is None else frozenset(types)
        self.handler = handler
        self.readers: list[_Reader] = []


class LocalTransport:
    """Delivers every module's outbox to the subscriptions of this process.

    ``sources`` maps each module database's name to its file: every process
    of one system names the same ones. ``state_dir`` holds the positions and
    the peers' names; the processes of one system share it.
    """

    def __init__(
        self,
        registry: MessageRegistry,
        sources: Mapping[str, Path],
        state_dir: Path,
        *,
        max_batch: int = 512,
        poll_interval: float = 0.5,
        commit_interval: float = 1.0,
        retry_delay: float = 0.05,
    ) -> None:
        self.registry = registry
        self.sources = dict(sources)
        self.state_dir = state_dir
        self.max_batch = max_batch
        self.poll_interval = poll_interval
        self.commit_interval = commit_interval
        self.retry_delay = retry_delay
        self._subscriptions: list[_Subscription] = []
        self._by_source: dict[str, list[_Reader]] = {}
        self._name = uuid.uuid4().hex
        self._socket: socket.socket | None = None
        self._peers: dict[str, bytes] = {}

    @property
    def peers(self) -> frozenset[str]:
        """The other processes this one wakes after its commits."""
        return frozenset(self._peers)

    def lag(self) -> dict[tuple[str, str], int]:
        """Rows of each source's outbox past each subscription's position (rows of every
        type: an upper bound of what it has to read), by (subscription, source).

        Thread-safe (a scrape runs in a worker thread): its own connections, and the
        positions only read.
        """
        ends: dict[str, int] = {}
        for source, path in self.sources.items():
            if not path.exists():
                continue
            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
                ) as conn:
                    (ends[source],) = conn.execute(
                        "SELECT coalesce(max(seq), 0) FROM outbox"
                    ).fetchone()
            except sqlite3.OperationalError:
                continue
        return {
            (sub.name, reader.source): max(0, ends[reader.source] - reader.position)
            for sub in self._subscriptions
            for reader in list(sub.readers)
            if reader.source in ends
        }

    def check(self, module: str, path: Path) -> None:
        """Raise ``SourceMismatchError`` unless ``path`` is the file read as ``module``'s
        outbox (a module built elsewhere would otherwise be silently never read)."""
        expected = self.sources.get(module)
        if expected is None or expected.resolve() != path.resolve():
            raise SourceMismatchError(
                f"the local bus reads module {module}'s outbox from {expected},"
                f" but its database is {path}"
            )

    # -- the port --------------------------------------------------------------

    def subscribe(
        self, subscription: str, types: Collection[str] | None, handler: BatchHandler
    ) -> None:
        self._subscriptions.append(_Subscription(subscription, types, handler))

    def publish(self, envelopes: Sequence[Envelope], on_delivered: DeliveredCallback) -> None:
        """The rows are in their outbox already (committed): wake the readers of their types."""
        types: dict[str, set[str]] = {}
        for envelope in envelopes:
            types.setdefault(envelope.source, set()).add(envelope.type)
        for source, emitted in types.items():
            self._wake(source, emitted)
            self._tell_peers(f"{source}\t{','.join(emitted)}".encode())
        on_delivered(envelopes)

    async def run(self) -> None:
        """Deliver until cancelled. Raises ``SubscriptionTakenError`` while another process
        runs one of these subscriptions (a standby: retried, it takes over once that
        process is gone)."""
        (self.state_dir / "positions").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.state_dir / "peers").mkdir(exist_ok=True, mode=0o700)
        with contextlib.ExitStack() as locks:
            for sub in self._subscriptions:
                locks.enter_context(self._claim(sub.name))
            await self._deliver()

    @contextlib.contextmanager
    def _claim(self, subscription: str) -> Iterator[None]:
        """Hold the subscription's lock file: one process reads for a subscription, or
        two would each handle everything and overwrite each other's positions."""
        path = self.state_dir / "positions" / f"{subscription}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SubscriptionTakenError(
                    f"subscription {subscription} is run by another process ({path})"
                ) from None
            yield
        finally:
            os.close(descriptor)  # releases the lock

    async def _deliver(self) -> None:
        for sub in self._subscriptions:
            saved = self._load_positions(sub.name)
            for source, path in self.sources.items():
                reader = _Reader(sub, source, path, saved.get(source, 0))
                sub.readers.append(reader)
                self._by_source.setdefault(source, []).append(reader)
        self._listen()
        try:
            async with anyio.create_task_group() as task_group:
                for sub in self._subscriptions:
                    for reader in sub.readers:
                        task_group.start_soon(self._read, reader, name=f"read:{sub.name}")
                task_group.start_soon(self._housekeeping)
        finally:
            self._save_positions()
            self._stop_listening()
            for sub in self._subscriptions:
                for reader in sub.readers:
                    reader.close()
                sub.readers.clear()
            self._by_source.clear()

    # -- reading ---------------------------------------------------------------

    async def _read(self, reader: _Reader) -> None:
        failures = 0
        while True:
            reader.wakeup = anyio.Event()  # before the fetch: a later publish sets it
            rows, end, full = reader.fetch(self.max_batch)
            if rows:
                batch = [envelope_from_row(row, self.registry, seq=seq) for seq, *row in rows]
                try:
                    await reader.sub.handler(batch)
                except Exception:
                    # The handler could not even park the batch (its database is
                    # failing): keep the position, try the same rows again later.
                    failures += 1
                    log.exception(
                        "subscription %s failed on a batch from %s (attempt %d)",
                        reader.sub.name, reader.source, failures,
                    )  # fmt: skip
                    await anyio.sleep(backoff(failures, base=self.retry_delay, cap=5.0))
                    continue
                failures = 0
            if end != reader.position:
                reader.position = end
                if full:
                    continue  # there may be more
            # The read saw the whole log as it was: a row committed since was published
            # after the event above was made, and has set it (or its datagram will).
            with anyio.move_on_after(self.poll_interval):
                await reader.wakeup.wait()

    def _wake(self, source: str, types: Collection[str]) -> None:
        """Wake the readers of ``source`` that subscribe to any of ``types`` (the others
        pass those rows at their next read)."""
        for reader in self._by_source.get(source, ()):
            wanted = reader.sub.wanted
            if wanted is None or not wanted.isdisjoint(types):
                reader.wakeup.set()

    # -- positions -------------------------------------------------------------

    def _positions_file(self, subscription: str) -> Path:
        return self.state_dir / "positions" / f"{subscription}.json"

    def _load_positions(self, subscription: str) -> dict[str, int]:
        try:
            saved = json.loads(self._positions_file(subscription).read_bytes())
        except FileNotFoundError:
            return {}
        return {str(source): int(seq) for source, seq in saved.items()}

    def _save_positions(self) -> None:
        """Write each subscription's positions that moved: a new file, then a rename."""
        for sub in self._subscriptions:
            if all(reader.position == reader.saved for reader in sub.readers):
                continue
            positions = {reader.source: reader.position for reader in sub.readers}
            target = self._positions_file(sub.name)
            temporary = target.with_suffix(".tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(json.dumps(positions).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
            for reader in sub.readers:
                reader.saved = positions[reader.source]

    async def _housekeeping(self) -> None:
        """Once per ``commit_interval``: save the positions, refresh the list of peers."""
        while True:
            await anyio.sleep(self.commit_interval)
            await anyio.to_thread.run_sync(self._save_positions)
            self._refresh_peers()

    # -- waking other processes ------------------------------------------------

    def _address(self, name: str) -> bytes:
        # Abstract sockets (Linux): no path to clean up, and gone with their process.
        return b"\0saga-bus-" + name.encode()

    def _listen(self) -> None:
        if not hasattr(socket, "AF_UNIX"):
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self._address(self._name))
        except OSError as exc:  # no abstract sockets here: the poll alone wakes the readers
            log.warning("local bus: no wakeups from other processes (%r)", exc)
            sock.close()
            return
        sock.setblocking(False)
        self._socket = sock
        (self.state_dir / "peers" / self._name).touch(mode=0o600)
        self._refresh_peers()
        self._tell_peers(b"")  # hello: the others list the peers again (an empty source)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_datagrams)

    def _stop_listening(self) -> None:
        if self._socket is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
        (self.state_dir / "peers" / self._name).unlink(missing_ok=True)

    def _on_datagrams(self) -> None:
        assert self._socket is not None
        received: set[bytes] = set()
        while True:
            try:
                received.add(self._socket.recv(4096))
            except (BlockingIOError, InterruptedError):
                break
        # Any local process can send to an abstract socket: a datagram only ever wakes
        # readers (which then read the databases), so a stray one costs a read.
        for datagram in received:
            source, _, types = datagram.decode(errors="replace").partition("\t")
            if source:
                self._wake(source, types.split(","))
            else:
                self._refresh_peers()

    def _refresh_peers(self) -> None:
        try:
            names = {p.name for p in (self.state_dir / "peers").iterdir()} - {self._name}
        except FileNotFoundError:
            names = set()
        self._peers = {name: self._address(name) for name in names}

    def _tell_peers(self, message: bytes) -> None:
        """Send ``message`` (a source and the types it emitted) to every other process."""
        sock = self._socket
        if sock is None:
            return
        for name, address in list(self._peers.items()):
            try:
                sock.sendto(message, address)
            except (BlockingIOError, InterruptedError):
                pass  # its queue is full: it has wakeups enough to read
            except (ConnectionRefusedError, FileNotFoundError):
                # Gone (a killed process leaves its file): forget it.
                del self._peers[name]
                (self.state_dir / "peers" / name).unlink(missing_ok=True)
            except OSError as exc:
                # Never an error for the commit that called this: the poll still reads.
                log.debug("local bus: no wakeup sent to %s: %r", name, exc)
                del self._peers[name]
