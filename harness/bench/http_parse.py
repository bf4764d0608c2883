"""The response side of http.py: an HTTP/1.1 response parser that runs on every read.

It de-chunks the body and splits SSE lines as bytes arrive (one loop, states inline: this is
the client's hot path); each `data:` payload is kept with the arrival time of the read that
completed its line, and parsed as JSON only after the level (client.py). `read_size` tells the
socket how much to read so that a read ends where one of the server's writes ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns


class HttpError(Exception):
    """The request could not be made or the response was cut off (message is one line);
    `response` holds what had arrived, so a stream cut short keeps its tokens."""

    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)  # non-streamed bodies (errors, /models)
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (read time ns, SSE data payload)
    first_byte_ns: int = 0
    end_ns: int = 0
    max_read_lag_ns: int = 0  # longest wait between a segment's arrival and this process reading it


class Exchange:
    """Parses one response as bytes arrive; resolves `done` when the body is complete."""

    __slots__ = ("response", "done", "stream", "timed_out", "_buf", "_state", "_remaining", "_sse", "_keep_alive")

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: bool) -> None:
        self.response = Response()
        self.done: asyncio.Future[Response] = loop.create_future()
        self.stream = stream
        self._buf = bytearray()
        self._state = "head"  # head | chunk_size | chunk_data | chunk_crlf | trailer | length | until_close | done
        self._remaining = 0
        self._sse = b""
        self._keep_alive = True
        self.timed_out = False

    @property
    def keep_alive(self) -> bool:
        return self._keep_alive and self._state == "done"

    def read_size(self, peek: Callable[[int], bytes]) -> int:
        """How much to read next so that the read ends where one of the server's writes ended:
        a whole HTTP chunk (its size line is peeked), the rest of one, or the head (peeked).
        Servers write each streamed event as one chunk; see sockclock.StampedSocket for why."""
        state = self._state
        if state == "chunk_size" and not self._buf:
            ahead = peek(24)
            end = ahead.find(b"\r\n")
            if end > 0:
                try:
                    return end + 2 + int(ahead[:end].split(b";", 1)[0], 16) + 2
                except ValueError:
                    return 16  # malformed: the parser will say so
            return 16
        if state == "chunk_data":
            return max(self._remaining + 2 - len(self._buf), 16)
        if state == "head" and not self._buf:
            end = peek(4096).find(b"\r\n\r\n")
            return end + 4 if end >= 0 else 4096
        return 16 if state in ("chunk_size", "chunk_crlf") else 4096

    def feed(self, now: int, data: bytes) -> None:
        """Consume bytes; one loop with the states inline, as this runs for every read."""
        if self.response.first_byte_ns == 0:
            self.response.first_byte_ns = now
        buf = self._buf
        buf += data
        while buf:
            state = self._state
            if state == "chunk_size":
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(bytes(buf[:end]).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    del buf[: end + 2]
                    self._state = "trailer"
                    continue
                total = end + 2 + size + 2
                if len(buf) >= total:  # the whole chunk is here (the usual case)
                    if buf[total - 2 : total] != b"\r\n":
                        raise HttpError("chunk not followed by CRLF")
                    self._body(now, bytes(buf[end + 2 : end + 2 + size]))
                    del buf[:total]
                    continue
                del buf[: end + 2]
                self._state, self._remaining = "chunk_data", size
            elif state == "chunk_data" or state == "length":
                take = min(self._remaining, len(buf))
                self._body(now, bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "chunk_crlf" if state == "chunk_data" else "done"
            elif state == "chunk_crlf" or state == "trailer":
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                del buf[: end + 2]
                if state == "chunk_crlf":
                    self._state = "chunk_size"
                elif end == 0:
                    self._state = "done"
            elif state == "until_close":
                self._body(now, bytes(buf))
                buf.clear()
            elif state == "head":
                if not self._head():
                    break
            else:  # done: bytes after the response are not ours
                break
        if self._state == "done" and not self.done.done():
            self.response.end_ns = now
            self.done.set_result(self.response)

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP response: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            return True  # an interim response; the real head follows
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.response.status, self.response.headers = status, headers
        connection = headers.get("connection", "").lower()
        self._keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = "length" if self._remaining else "done"
        elif status in (204, 304):
            self._state = "done"
        else:
            self._state, self._keep_alive = "until_close", False
        return True

    def _body(self, now: int, data: bytes) -> None:
        if not (self.stream and self.response.status == 200):
            self.response.body += data
            return
        # SSE: one OpenAI event per `data:` line; '\r\n' and '\n' line ends both occur in the wild.
        text = self._sse + data if self._sse else data
        lines = text.split(b"\n")
        self._sse = lines.pop()
        events = self.response.events
        for line in lines:
            if line.startswith(b"data:"):
                events.append((now, line[5:].strip()))

    def connection_closed(self, now: int, exc: BaseException | None) -> None:
        if self.done.done():
            return
        if self._state == "until_close" and exc is None:
            if self._sse.startswith(b"data:"):
                self.response.events.append((now, self._sse[5:].strip()))
            self._state = "done"
            self.response.end_ns = now
            self.done.set_result(self.response)
            return
        reason = f": {exc}" if exc else ""
        where = "before the response" if self.response.status == 0 else "in the middle of the response"
        self.response.end_ns = now
        self.done.set_exception(HttpError(f"connection closed {where}{reason}", self.response))


def expire(exchange: Exchange, timeout: float) -> None:
    """The request's timer ran out: it fails, keeping the tokens that had come."""
    if not exchange.done.done():
        exchange.timed_out = True
        exchange.response.end_ns = perf_counter_ns()
        exchange.done.set_exception(HttpError(f"no complete response within {timeout:g} s", exchange.response))


