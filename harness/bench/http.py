"""A minimal HTTP/1.1 client on the asyncio event loop, for timing streamed responses
(connections and the pool here; the response parser in http_parse.py).

Why not aiohttp or httpx: both hand each read to a coroutine that runs a loop turn later, and
both can only tell when this process got around to a chunk. Under 64 concurrent streams on a
shared machine that trails the chunk's arrival by milliseconds. Here plain-TCP connections are
non-blocking sockets read with recvmsg, and every read carries the kernel's arrival stamp
(sockclock.py); the hot path only de-chunks the body and splits SSE lines, and JSON is parsed
after the level is over. TLS connections go through an asyncio transport and are stamped
with the read time.

Supports what OpenAI-compatible servers send: chunked or Content-Length bodies, or a body that
ends when the connection closes; keep-alive connections pooled per origin.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from dataclasses import dataclass
from time import perf_counter_ns
from urllib.parse import urlsplit

from harness.bench import sockclock
from harness.bench.http_parse import Exchange, HttpError, Response, expire

__all__ = ["ConnectionPool", "HttpError", "Origin", "Response"]


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    base_path: str  # e.g. "/v1", no trailing slash

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _deliver(conn: _Conn, arrived: int, read: int, data: bytes) -> None:
    exchange = conn.exchange
    if exchange is None:
        conn.abort()  # bytes nobody asked for: the connection is not reusable
        return
    lag = read - arrived
    if lag > exchange.response.max_read_lag_ns:
        exchange.response.max_read_lag_ns = lag
    try:
        exchange.feed(arrived, data)
    except (HttpError, ValueError) as exc:
        if not exchange.done.done():
            exchange.done.set_exception(HttpError(f"malformed response: {exc}"))
        conn.abort()


class _Conn:
    """What the pool needs of a connection (a plain socket or a TLS transport)."""

    exchange: Exchange | None
    closed: bool

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...


class _SocketConnection(sockclock.StampedSocket, _Conn):
    """Plain TCP read with recvmsg, to get the kernel's arrival stamps."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.exchange = None
        super().__init__(loop, sock)

    def on_data(self, arrived: int, read: int, data: bytes) -> None:
        _deliver(self, arrived, read, data)

    def read_size(self) -> int:
        return self.exchange.read_size(self._peek) if self.exchange is not None else self.READ_SIZE

    def _peek(self, size: int) -> bytes:
        return self.sock.recv(size, socket.MSG_PEEK)

    def on_lost(self, exc: BaseException | None) -> None:
        if self.exchange is not None:
            self.exchange.connection_closed(perf_counter_ns(), exc)

    def abort(self) -> None:
        self._fail(None)


class _TransportConnection(asyncio.Protocol, _Conn):
    """TLS (or anything not Linux) through an asyncio transport: read times, not arrival stamps."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        _deliver(self, now, now, data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange.connection_closed(perf_counter_ns(), exc)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            self.connection_lost(ConnectionResetError("connection already closed"))
            return
        self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """Keep-alive connections to one origin; one request at a time per connection."""

    def __init__(self, origin: Origin, limit: int = 1024) -> None:
        self.origin = origin
        self._idle: list[_Conn] = []
        self._ssl = ssl.create_default_context() if origin.scheme == "https" else None
        self._limit = limit
        self._all: set[_Conn] = set()
        self._address: tuple | None = None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        where = f"{self.origin.host}:{self.origin.port}"
        try:
            if self._ssl is not None or not sys.platform.startswith("linux"):
                _, conn = await loop.create_connection(
                    _TransportConnection, self.origin.host, self.origin.port, ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None)
            else:
                conn = await self._connect_socket(loop)
        except ConnectionRefusedError:
            raise HttpError(f"connection refused by {where}") from None
        except OSError as exc:
            raise HttpError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        self._all.add(conn)
        return conn

    async def _connect_socket(self, loop: asyncio.AbstractEventLoop) -> _SocketConnection:
        if self._address is None:
            infos = await loop.getaddrinfo(self.origin.host, self.origin.port, type=socket.SOCK_STREAM)
            self._address = infos[0]
        family, kind, proto, _, address = self._address
        sock = socket.socket(family, kind, proto)
        try:
            sockclock.StampedSocket.prepare(sock)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return _SocketConnection(loop, sock)

    def build(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
        """Request bytes; a caller that sends the same request many times builds it once."""
        head = [f"{method} {self.origin.base_path}{path} HTTP/1.1", f"Host: {self.origin.host_header}",
                *(f"{k}: {v}" for k, v in headers.items())]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], *,
                      stream: bool, timeout: float | None) -> Response:
        return await self.send(self.build(method, path, headers, body), stream=stream, timeout=timeout)

    async def send(self, raw: bytes, *, stream: bool, timeout: float | None) -> Response:
        """Send request bytes and read one response; a reused connection that the server had
        closed is retried once. The timeout is a timer on the exchange rather than wait_for,
        which would wrap every request in more objects and callbacks."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = None, False
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed:
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect()
            exchange = Exchange(loop, stream)
            conn.exchange = exchange
            conn.write(raw)
            timer = loop.call_later(timeout, expire, exchange, timeout) if timeout else None
            try:
                response = await exchange.done
            except HttpError:
                conn.exchange = None
                self._drop(conn)
                if reused and attempt == 0 and exchange.response.status == 0 and not exchange.timed_out:
                    continue  # the server closed an idle connection as we reused it
                raise
            except BaseException:
                self._drop(conn)  # cancelled: the stream is abandoned mid-way
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            conn.exchange = None
            if exchange.keep_alive and len(self._idle) < self._limit:
                self._idle.append(conn)
            else:
                self._drop(conn)
            return response
        raise AssertionError("unreachable")

    def _drop(self, conn: _Conn) -> None:
        conn.abort()
        self._all.discard(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        self._idle.clear()
