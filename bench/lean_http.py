"""A small HTTP/1.1 keep-alive client for the load generator: the requests cost little CPU.

The benchmark's client shares the machine with the app it measures, so every
millisecond it spends per request is taken from the app. httpx spends about one
(connection pool, header models, URL objects); this client writes the request
bytes itself on a kept-alive connection and lets ``httptools`` (the parser
uvicorn uses) read the response: about a tenth of that. It speaks just what the
benchmark sends (``GET`` and ``POST`` with a body, ``Content-Length``-framed or
chunked responses) to the one origin it was made for, and offers the few
members of ``httpx.AsyncClient`` the benchmark calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = ["LeanClient", "LeanResponse"]

_JSON = {"content-type": "application/json"}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True, slots=True)
class LeanResponse:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its response parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[LeanResponse] | None = None
        self.keep_alive = True
        self.closed = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection closed: {exc!r}"))

    # -- httptools callbacks --

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        response = LeanResponse(self.parser.get_status_code(), b"".join(self.body))
        self.body = []
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def request(self, data: bytes, limit_s: float) -> LeanResponse:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        # A timer rather than asyncio.wait_for, which costs a task per request.
        timer = loop.call_later(limit_s, self._fail, TimeoutError(f"no response in {limit_s} s"))
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            timer.cancel()


class LeanClient:
    """Requests to one origin over up to ``connections`` kept-alive connections."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connections: int = 1,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"LeanClient speaks plain http to one host, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        fixed = {"host": parts.netloc, **{k.lower(): v for k, v in (headers or {}).items()}}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for connection in self._all:
            if connection.transport is not None:
                connection.transport.close()
        self._all.clear()
        self._idle.clear()

    async def get(self, path: str) -> LeanResponse:
        return await self.request("GET", path)

    async def post(
        self, path: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> LeanResponse:
        return await self.request("POST", path, content, headers)

    async def put(self, path: str, *, json: Any) -> LeanResponse:
        return await self.request("PUT", path, _json_bytes(json), _JSON)

    async def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> LeanResponse:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if content is not None:
            extra += f"content-length: {len(content)}\r\n"
        data = f"{method} {path} HTTP/1.1\r\n{self._fixed}{extra}\r\n".encode()
        return await self._send(data + content if content else data)

    async def _send(self, data: bytes) -> LeanResponse:
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                response = await connection.request(data, self.timeout)
            except BaseException:
                self._drop(connection)
                raise
            if connection.keep_alive and not connection.closed:
                self._idle.append(connection)
            else:
                self._drop(connection)
            return response

    def _take_idle(self) -> _Connection | None:
        """A kept-alive connection the server has not closed (uvicorn closes idle ones)."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._all.discard(connection)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection.transport is not None:
            connection.transport.close()
