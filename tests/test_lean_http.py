"""The benchmark's lean HTTP client (bench/lean_http.py) against a real server socket.

The server is a few lines of asyncio that answer as HTTP/1.1 servers do: with a
Content-Length or chunked body, keeping the connection or closing it. What is
checked is the client's own part: requests written right, connections kept and
reused, a closed one replaced, a response split across reads put together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bench.lean_http import LeanClient

pytestmark = pytest.mark.anyio

Answer = Callable[[bytes], list[bytes]]  # a request (head and body) -> the writes of its answer


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writes = self.answer(request)
                for chunk in writes:
                    writer.write(chunk)
                    await writer.drain()
                if b"connection: close" in writes[0].lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[tuple[Server, str]]:
    server = Server(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server, f"http://127.0.0.1:{port}"


def ok(body: bytes, *, close: bool = False) -> list[bytes]:
    connection = b"connection: close\r\n" if close else b""
    head = b"HTTP/1.1 200 OK\r\n" + connection + b"content-length: %d\r\n\r\n" % len(body)
    return [head, body]


def echo(request: bytes) -> list[bytes]:
    return ok(request.split(b"\r\n\r\n", 1)[1] or b"{}")


async def test_requests_reuse_one_kept_alive_connection_and_carry_their_body() -> None:
    bearer = {"Authorization": "Bearer t"}
    async with serving(echo) as (server, url), LeanClient(url, headers=bearer) as client:
        posted = await client.post(
            "/orders", content=b'{"a": 1}', headers={"content-type": "application/json"}
        )
        got = await client.get("/orders/1?wait=5")
        put = await client.put("/products/p", json={"stock": 3})
    assert (posted.status_code, posted.json()) == (200, {"a": 1})
    assert (got.status_code, got.json()) == (200, {})
    assert put.json() == {"stock": 3}
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /orders HTTP/1.1\r\n")
    assert b"authorization: Bearer t\r\n" in first
    assert b"content-length: 8\r\n" in first
    assert server.requests[1].startswith(b"GET /orders/1?wait=5 HTTP/1.1\r\n")


async def test_a_chunked_answer_split_across_writes_is_put_together() -> None:
    def chunked(_: bytes) -> list[bytes]:
        return [
            b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"0\r\n\r\n",
        ]

    async with serving(chunked) as (_, url), LeanClient(url) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (202, "hello world")


async def test_a_connection_the_server_closed_is_replaced() -> None:
    async with serving(lambda _: ok(b"bye", close=True)) as (server, url), LeanClient(url) as c:
        for _ in range(3):
            assert (await c.get("/")).text == "bye"
    assert server.connections == 3


async def test_concurrent_requests_use_at_most_the_connections_given() -> None:
    async with serving(lambda _: ok(b"x")) as (server, url), LeanClient(url, connections=2) as c:
        responses = await asyncio.gather(*(c.get(f"/{i}") for i in range(20)))
    assert [r.text for r in responses] == ["x"] * 20
    assert server.connections == 2
