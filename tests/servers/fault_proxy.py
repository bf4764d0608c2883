"""A reverse proxy that injects the faults real inference servers and gateways produce.

    python -m tests.servers.fault_proxy --upstream http://127.0.0.1:8000 --port 8001 --rate 0.3 --seed 7
        [--faults 429,500,503,hang,cut,malformed] [--paths /v1/completions] [--hang-s 30] [--log FILE]

Each request draws from a seeded generator, in arrival order: with probability `rate` it gets a
fault instead of a clean pass-through. Faults are dealt round-robin over `--faults`, so any run
that draws len(faults) of them has met every kind:

- 429: Too Many Requests with Retry-After, alternately in seconds and as an HTTP date;
- 500, 503: a JSON error body;
- hang: no answer at all until the client gives up (or --hang-s passes), then the socket closes;
- cut: the upstream answer's headers and half its body (or its first event, for a stream), then
  the connection drops;
- malformed: status 200 with the upstream JSON truncated to invalid JSON (a stream: a broken event).

Every injected fault is one JSON line on --log (and stderr): {"n", "method", "path", "fault"}. The
request's headers are never logged (they carry the API key).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

FAULTS = ("429", "500", "503", "hang", "cut", "malformed")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host", "server", "date"}


@dataclass
class FaultPlan:
    """Which request gets which fault: a seeded draw per request, kinds dealt in turn."""

    rate: float
    faults: tuple[str, ...]
    seed: int
    log: TextIO | None = None
    paths: tuple[str, ...] = ()  # only requests under these path prefixes get faults (empty: all)
    rng: random.Random = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    injected: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # injected so far, per kind

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            if self.paths and not path.startswith(self.paths):
                return None
            if not self.faults or self.rng.random() >= self.rate:
                return None
            fault = self.faults[self.injected % len(self.faults)]
            self.injected += 1
            self.counts[fault] = self.counts.get(fault, 0) + 1
            line = json.dumps({"n": self.requests, "method": method, "path": path, "fault": fault,
                               "time": round(time.time(), 3)})
            for out in (self.log, sys.stderr):
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
            return fault


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--upstream must be an http(s) URL, not {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


def make_handler(upstream: Upstream, plan: FaultPlan, hang_s: float, upstream_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: faults are logged by the plan
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self._handle()

        def do_POST(self) -> None:  # noqa: N802
            self._handle()

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fault = plan.draw(self.command, self.path)
            if fault in ("429", "500", "503"):
                return self._error(int(fault))
            if fault == "hang":
                return self._hang()
            try:
                response = self._forward(body)
            except OSError as error:
                return self._send(502, {"Content-Type": "application/json"},
                                  json.dumps({"error": {"message": f"upstream: {error}"}}).encode())
            if fault == "cut":
                return self._relay(response, cut=True)
            if fault == "malformed":
                return self._malformed(response)
            self._relay(response, cut=False)

        # -- faults ------------------------------------------------------------------------------

        def _error(self, status: int) -> None:
            headers = {"Content-Type": "application/json"}
            if status == 429:
                # alternate the two Retry-After forms a client must understand
                headers["Retry-After"] = "1" if plan.counts["429"] % 2 else formatdate(time.time() + 1, usegmt=True)
            payload = {"error": {"message": f"injected fault: HTTP {status}", "type": "fault_proxy", "code": status}}
            self._send(status, headers, json.dumps(payload).encode())

        def _hang(self) -> None:
            # Wait for the client to give up (its socket closes and becomes readable) or hang_s.
            select.select([self.connection], [], [], hang_s)
            self.close_connection = True

        def _malformed(self, response: http.client.HTTPResponse) -> None:
            data = response.read()
            if "event-stream" in (response.getheader("Content-Type") or ""):
                broken = b'data: {"choices": [{"text": "\n\n'
            else:
                broken = data[: max(1, len(data) // 2)]  # valid HTTP, invalid JSON
            self._send(200, {"Content-Type": response.getheader("Content-Type") or "application/json"}, broken)

        # -- pass-through ------------------------------------------------------------------------

        def _forward(self, body: bytes) -> http.client.HTTPResponse:
            conn = upstream.connect(upstream_timeout)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, upstream.base_path + self.path, body=body if body else None, headers=headers)
            return conn.getresponse()

        def _relay(self, response: http.client.HTTPResponse, cut: bool) -> None:
            headers = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            if "event-stream" in (response.getheader("Content-Type") or ""):
                return self._relay_stream(response, headers, cut)
            data = response.read()
            if not cut:
                return self._send(response.status, headers, data)
            # promise the whole body, deliver half, hang up: the client sees a truncated message
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True

        def _relay_stream(self, response: http.client.HTTPResponse, headers: dict, cut: bool) -> None:
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            events = 0
            while line := response.readline():
                self.wfile.write(line)
                self.wfile.flush()
                events += line == b"\n"
                if cut and events >= 1:
                    return  # one event through, then the connection drops mid-stream

        def _send(self, status: int, headers: dict, data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.fault_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="base URL of the real server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--rate", type=float, default=0.3, help="fraction of requests that get a fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--hang-s", type=float, default=30.0, help="longest a hang holds the connection")
    parser.add_argument("--upstream-timeout", type=float, default=600.0)
    parser.add_argument("--paths", default="", help="comma-separated path prefixes that get faults (default: all)")
    parser.add_argument("--log", help="append one JSON line per injected fault here")
    args = parser.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = set(faults) - set(FAULTS)
    if unknown or not 0.0 <= args.rate <= 1.0:
        parser.error(f"unknown faults {sorted(unknown)}" if unknown else "--rate must be in [0, 1]")
    try:
        upstream = Upstream.parse(args.upstream)
    except ValueError as error:
        parser.error(str(error))
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    plan = FaultPlan(args.rate, faults, args.seed, log, paths)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(upstream, plan, args.hang_s, args.upstream_timeout))
    server.daemon_threads = True
    print(f"fault_proxy: http://{args.host}:{server.server_port} -> {args.upstream} "
          f"(rate {args.rate}, faults {','.join(faults)}, seed {args.seed})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if log:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
