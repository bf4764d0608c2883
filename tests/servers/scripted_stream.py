"""A scripted streaming OpenAI-compatible server: the ground truth for `harness bench`.

Every completion request is answered on a script: the first content chunk `ttft_ms` after the
request was read, then one token every `gap_ms`; chunks carry tokens in the repeating
`chunk_pattern` (e.g. 1,3,2: a chunk with three tokens is sent when its last token is due),
chat streams open with a role-only chunk, and `stream_options.include_usage` adds the trailing
usage chunk (`continuous_usage_stats` puts usage on every chunk, as vLLM). The answer has
`tokens` tokens, or `max_tokens` with `ignore_eos`, never more than `max_tokens`.

Under load a server drifts from its script, so the script is not the truth: the log is. One JSON
line per request records when the request was read and when each chunk was handed to the
kernel (`chunks`: [ns, tokens]; `end_ns` for the end of the response), all on
time.perf_counter_ns (CLOCK_MONOTONIC on Linux: one clock for every process on the machine).
`read_ns` is the kernel's arrival stamp of the bytes that completed the request
(SO_TIMESTAMPNS, see harness/bench/sockclock.py), `read_user_ns` when this process read
them; the script's delays run from `read_ns`. A Python server on a busy machine reads a
request milliseconds after it arrived; the arrival stamp keeps that out of the truth.

Faults, every Nth completion request: `fail_every` answers HTTP 500; `error_event_every` streams
an error event after `drop_after` chunks and ends; `drop_every` resets the connection after
`drop_after` chunks. A wrong model name gets a 404 as from vLLM.

Run: python -m tests.servers.scripted_stream --port 0 --log FILE [--ttft-ms 200 --gap-ms 20 ...];
it prints "scripted_stream listening on HOST:PORT" once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import IO, Any

from harness.bench.sockclock import StampedSocket

try:
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
END = b"0\r\n\r\n"
# The client names each request in this header (not X-Request-Id, which some servers validate as a UUID).
REQUEST_ID_HEADER = "x-harness-request-id"


@dataclass(frozen=True)
class Script:
    model: str = "scripted"
    ttft_ms: float = 200.0
    gap_ms: float = 20.0
    tokens: int = 16
    chunk_pattern: tuple[int, ...] = (1,)
    fail_every: int = 0
    error_event_every: int = 0
    drop_every: int = 0
    drop_after: int = 2
    crlf: bool = False  # SSE events separated by \r\n\r\n (sse-starlette, used by llama_cpp.server)
    api_key: str | None = None  # when set, requests without "Authorization: Bearer <key>" get a 401


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_response(status: int, reason: str, payload: dict) -> bytes:
    body = _dumps(payload)
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    read_ns: int  # kernel arrival stamp of the segment that completed the request
    read_user_ns: int  # when this process read it


@dataclass
class _LogEntry:
    id: str
    path: str
    read_ns: int
    read_user_ns: int
    status: int = 200
    role_ns: int | None = None
    chunks: list[list[int]] = field(default_factory=list)
    end_ns: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fault: str | None = None


class ScriptedServer:
    def __init__(self, script: Script, log: IO[str] | None) -> None:
        self.script = script
        self.log = log
        self.counter = itertools.count(1)
        self.sep = b"\r\n\r\n" if script.crlf else b"\n\n"

    def write_log(self, entry: _LogEntry) -> None:
        if self.log is not None:
            self.log.write(json.dumps(asdict(entry), separators=(",", ":")) + "\n")
            self.log.flush()

    def event(self, obj: Any) -> bytes:
        return _chunk(b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + self.sep)

    async def handle(self, conn: _Connection, req: _Request) -> None:
        if self.script.api_key and req.headers.get("authorization") != f"Bearer {self.script.api_key}":
            conn.write(_json_response(401, "Unauthorized", {"error": {"message": "Incorrect API key provided.",
                                                                      "type": "invalid_request_error", "code": 401}}))
            return
        if req.method == "GET" and req.path.endswith("/models"):
            conn.write(_json_response(200, "OK", {"object": "list", "data": [{"id": self.script.model, "object": "model"}]}))
            return
        if req.method != "POST" or not req.path.endswith("/completions"):
            conn.write(_json_response(404, "Not Found", {"error": {"message": f"no route {req.path}", "code": 404}}))
            return
        try:
            body = json.loads(req.body)
        except ValueError:
            conn.write(_json_response(400, "Bad Request", {"error": {"message": "body is not JSON", "code": 400}}))
            return
        entry = _LogEntry(id=req.headers.get(REQUEST_ID_HEADER, ""), path=req.path, read_ns=req.read_ns,
                          read_user_ns=req.read_user_ns)
        if body.get("model") != self.script.model:
            entry.status = 404
            conn.write(_json_response(404, "Not Found", {"error": {
                "message": f"The model `{body.get('model')}` does not exist.", "type": "NotFoundError", "code": 404}}))
            self.write_log(entry)
            return
        number = next(self.counter)
        if self.script.fail_every and number % self.script.fail_every == 0:
            entry.status, entry.fault = 500, "http-500"
            conn.write(_json_response(500, "Internal Server Error", {"error": {
                "message": "scripted server error", "type": "InternalServerError", "code": 500}}))
            self.write_log(entry)
            return
        try:
            await self.stream(conn, req, body, entry, number)
        finally:
            self.write_log(entry)

    async def stream(self, conn: _Connection, req: _Request, body: dict, entry: _LogEntry, number: int) -> None:
        s = self.script
        chat = req.path.endswith("/chat/completions")
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or s.tokens)
        n = max_tokens if body.get("ignore_eos") else min(s.tokens, max_tokens)
        options = body.get("stream_options") or {}
        usage_at_end, continuous = bool(options.get("include_usage")), bool(options.get("continuous_usage_stats"))
        prompt = " ".join(m.get("content", "") for m in body.get("messages", [])) if chat else str(body.get("prompt", ""))
        entry.prompt_tokens = len(prompt.split())
        base = {"id": f"cmpl-{number}", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": s.model}
        # Content chunks are spliced from bytes: a zero-delay stream is bounded by this loop.
        opening = _dumps(base)[:-1] + (b',"choices":[{"index":0,"delta":{"content":' if chat else b',"choices":[{"index":0,"text":')
        closing = b'}' if chat else b''
        head = STREAM_HEAD
        if chat:
            role = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            head += self.event(role)
            entry.role_ns = perf_counter_ns()
        conn.write(head)
        faults = [(every, kind) for every, kind in ((s.drop_every, "drop"), (s.error_event_every, "error-event"))
                  if every and number % every == 0]
        sizes = itertools.cycle(s.chunk_pattern)
        ttft_ns, gap_ns = int(s.ttft_ms * 1e6), int(s.gap_ms * 1e6)
        sent = 0
        while sent < n:
            size = min(next(sizes), n - sent)
            due = req.read_ns + ttft_ns + (sent + size - 1) * gap_ns
            delay = (due - perf_counter_ns()) / 1e9
            await asyncio.sleep(delay if delay > 0 else 0)  # 0 still yields, so zero-delay streams interleave
            if conn.closed:
                entry.fault = entry.fault or "client-closed"
                return
            sent += size
            text = "".join(f" t{i}" for i in range(sent - size, sent))
            finish = (b'"length"' if n == max_tokens else b'"stop"') if sent == n else b"null"
            obj = opening + _dumps(text) + closing + b',"logprobs":null,"finish_reason":' + finish + b"}]"
            if continuous:
                obj += b',"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (
                    entry.prompt_tokens, sent, entry.prompt_tokens + sent)
            data = self.event(obj + b"}")
            now = perf_counter_ns()
            conn.write(data)
            entry.chunks.append([now, size])
            entry.completion_tokens = sent
            if faults and len(entry.chunks) >= s.drop_after:
                entry.fault = faults[0][1]
                if entry.fault == "drop":
                    conn.abort()
                    return
                err = {"error": {"message": "scripted mid-stream error", "type": "InternalServerError", "code": 500}}
                entry.end_ns = perf_counter_ns()
                conn.write(self.event(err) + self.event(b"[DONE]") + END)
                return
        tail = b""
        if usage_at_end:
            tail += self.event({**base, "choices": [], "usage": {
                "prompt_tokens": entry.prompt_tokens, "completion_tokens": n, "total_tokens": entry.prompt_tokens + n}})
        tail += self.event(b"[DONE]") + END
        entry.end_ns = perf_counter_ns()
        conn.write(tail)


class _Connection(StampedSocket):
    """One client connection: parses requests, answers them one at a time (keep-alive)."""

    def __init__(self, server: ScriptedServer, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.server = server
        self.buf = bytearray()
        self.busy = False
        self.scheduled = False
        self.arrived_ns = self.read_ns = 0
        super().__init__(loop, sock)

    def on_lost(self, exc: BaseException | None) -> None:
        pass  # a stream in progress sees `closed` and stops

    def abort(self) -> None:
        self.close(reset=True)

    def on_data(self, arrived: int, read: int, data: bytes) -> None:
        # Only the stamps and the buffer here: parsing waits for the next loop turn, so that
        # when 64 requests arrive at once none of them waits for another to be handled.
        self.arrived_ns, self.read_ns = arrived, read
        self.buf += data
        if not self.busy and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self.scheduled = False
        if not self.busy and not self.closed:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        method, path = (lines[0].split(" ") + ["", ""])[:2]
        self.busy = True
        request = _Request(method, path, headers, body, self.arrived_ns, self.read_ns)
        task = self.loop.create_task(self.server.handle(self, request))
        task.add_done_callback(lambda _: self._done(headers))

    def _done(self, headers: dict[str, str]) -> None:
        self.busy = False
        if headers.get("connection", "").lower() == "close":
            self.close()
        elif self.buf and not self.closed:
            self._next()


def _accept(server: ScriptedServer, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. out of file descriptors: the client sees a refused or reset connection
        StampedSocket.prepare(sock)
        _Connection(server, loop, sock)


async def serve(script: Script, host: str, port: int, log_path: Path | None) -> None:
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    server = ScriptedServer(script, log)
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    loop.add_reader(listener.fileno(), _accept, server, loop, listener)
    bound = listener.getsockname()
    print(f"scripted_stream listening on {bound[0]}:{bound[1]}", flush=True)
    await asyncio.Event().wait()  # until the process is stopped


# ---- for tests and benchmarks: the server in a subprocess ------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> dict[str, dict]:
        """Log entries by request id (entries without an id are left out)."""
        entries = {}
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry["id"]:
                entries[entry["id"]] = entry
        return entries

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_subprocess(script: Script, log_path: Path, cpu: int | None = None, timeout: float = 30.0) -> ServerProcess:
    """Start the server on a free port; `cpu` pins it to one core (os.sched_setaffinity)."""
    args = [sys.executable, "-m", "tests.servers.scripted_stream", "--port", "0", "--log", str(log_path),
            "--model", script.model, "--ttft-ms", str(script.ttft_ms), "--gap-ms", str(script.gap_ms),
            "--tokens", str(script.tokens), "--chunk-pattern", ",".join(map(str, script.chunk_pattern)),
            "--fail-every", str(script.fail_every), "--error-event-every", str(script.error_event_every),
            "--drop-every", str(script.drop_every), "--drop-after", str(script.drop_after)]
    if script.crlf:
        args.append("--crlf")
    if script.api_key:
        args += ["--api-key", script.api_key]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"scripted server did not start: {line!r} {process.stderr.read() if process.stderr else ''}")
    address = line.rsplit(" ", 1)[1].strip()
    return ServerProcess(process, f"http://{address}/v1", log_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--model", default=Script.model)
    parser.add_argument("--ttft-ms", type=float, default=Script.ttft_ms)
    parser.add_argument("--gap-ms", type=float, default=Script.gap_ms)
    parser.add_argument("--tokens", type=int, default=Script.tokens)
    parser.add_argument("--chunk-pattern", default="1", help="tokens per chunk, repeating, e.g. 1,3,2")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--error-event-every", type=int, default=0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--drop-after", type=int, default=Script.drop_after)
    parser.add_argument("--crlf", action="store_true")
    parser.add_argument("--api-key", help="require this bearer token")
    a = parser.parse_args(argv)
    pattern = tuple(int(x) for x in a.chunk_pattern.split(",") if x.strip())
    if not pattern or min(pattern) < 1:
        parser.error("--chunk-pattern needs positive integers")
    script = Script(a.model, a.ttft_ms, a.gap_ms, a.tokens, pattern, a.fail_every, a.error_event_every, a.drop_every,
                    a.drop_after, a.crlf, a.api_key)
    try:
        asyncio.run(serve(script, a.host, a.port, a.log))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
