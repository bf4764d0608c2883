"""A scripted judge: a real OpenAI-compatible HTTP server whose replies are chosen by rules.

Judged metrics (RAG faithfulness, answer relevancy, ...) are tested against reference tools
by pointing both at this server: the same prompt gets the same scripted reply, so any
difference in the scores comes from the metric code, not from a model.

Script (JSON): a list of rules, or {"model": NAME, "rules": [...], "default": RULE}.

    {"match": REGEX, "reply": TEXT_OR_JSON, "mode": "reply", "template": false, "seconds": 600}

The first rule whose `match` is found (re.search, DOTALL) in the last user message of a chat
request (the prompt of a completion request) answers it; no match falls to `default`
(by default a refusal, so an unscripted prompt is visible as an invalid judgment, not a
plausible verdict). A JSON `reply` is sent as its compact JSON text; with "template": true
the reply is expanded with the match's groups (\\1, \\g<name>). Modes:

- reply:   answer with the reply;
- stall:   wait `seconds` (default 600) before answering, to exercise client timeouts;
- refuse:  answer "I'm sorry, but I can't help with that request.";
- garbage: answer text that is not JSON;
- error:   HTTP `status` (default 500) with an OpenAI-style error body.

Every request is logged (in memory, GET /_judge/requests, and with --log as JSON lines).
Run: harness serve judge --script FILE --port N [--log requests.jsonl]
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REFUSAL = "I'm sorry, but I can't help with that request."
GARBAGE = "<<garbage>> verdict: maybe?? {not json"
MODES = ("reply", "stall", "refuse", "garbage", "error")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str] | None  # None: the default rule
    reply: str = ""
    mode: str = "reply"
    template: bool = False
    seconds: float = 600.0
    status: int = 500

    def text(self, match: re.Match[str] | None) -> str:
        if self.mode == "refuse":
            return REFUSAL
        if self.mode == "garbage":
            return GARBAGE
        return match.expand(self.reply) if self.template and match is not None else self.reply


def _rule(raw: dict, default: bool = False) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"a rule must be an object, got {raw!r}")
    mode = raw.get("mode", "reply")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if not default and not isinstance(raw.get("match"), str):
        raise ValueError(f"rule without a 'match' regex: {raw!r}")
    reply = raw.get("reply", "")
    text = reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
    pattern = None if default else re.compile(raw["match"], re.DOTALL)
    return Rule(pattern, text, mode, bool(raw.get("template", False)), float(raw.get("seconds", 600.0)),
                int(raw.get("status", 500)))


@dataclass
class Script:
    rules: list[Rule]
    default: Rule = field(default_factory=lambda: Rule(None, mode="refuse"))
    model: str = "judge"

    @classmethod
    def from_json(cls, value: Any) -> Script:
        if isinstance(value, list):
            value = {"rules": value}
        if not isinstance(value, dict) or not isinstance(value.get("rules", []), list):
            raise ValueError("a script is a list of rules or an object with a 'rules' list")
        default = _rule(value["default"], default=True) if "default" in value else Rule(None, mode="refuse")
        return cls([_rule(r) for r in value.get("rules", [])], default, str(value.get("model", "judge")))

    @classmethod
    def load(cls, path: Path) -> Script:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def choose(self, text: str) -> tuple[int, Rule, re.Match[str] | None]:
        """(index of the rule, or -1 for the default; the rule; its match)."""
        for index, rule in enumerate(self.rules):
            assert rule.pattern is not None
            match = rule.pattern.search(text)
            if match is not None:
                return index, rule, match
        return -1, self.default, None


def _message_text(content: Any) -> str:
    """Chat content is a string or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_of(path: str, body: dict) -> str:
    if path.endswith("/chat/completions"):
        users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        return _message_text(users[-1].get("content")) if users else ""
    prompt = body.get("prompt", "")
    return prompt[0] if isinstance(prompt, list) and prompt else str(prompt)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.judge.script.model, "object": "model",
                                                         "created": 0, "owned_by": "harness"}]})
        elif path == "/_judge/requests":
            self._send(200, self.server.judge.requests())
        else:
            self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        if not (path.endswith("/chat/completions") or path.endswith("/completions")):
            self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        judge = self.server.judge
        index, rule, match = judge.script.choose(prompt_of(path, body))
        auth = self.headers.get("Authorization")
        # which credential came, without keeping it: the sha256 of the Authorization header
        judge.record({"path": path, "body": body, "rule": index, "mode": rule.mode, "time": time.time(),
                      "auth_sha256": hashlib.sha256(auth.encode()).hexdigest() if auth else None})
        if rule.mode == "stall" and judge.stopping.wait(rule.seconds):
            return  # shutting down: drop the connection
        if rule.mode == "error":
            self._send(rule.status, {"error": {"message": "scripted error", "type": "server_error", "code": rule.status}})
            return
        text = rule.text(match)
        try:
            if body.get("stream"):
                self._stream(path, body, text)
            else:
                self._send(200, completion(path, body, text, judge.script.model, judge.next_id()))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer

    def _stream(self, path: str, body: dict, text: str) -> None:
        chat = path.endswith("/chat/completions")
        ident = self.server.judge.next_id()
        model = body.get("model") or self.server.judge.script.model
        kind = "chat.completion.chunk" if chat else "text_completion"
        n = int(body.get("n") or 1)
        events = []
        for i in range(n):
            delta = {"index": i, "delta": {"role": "assistant", "content": text}, "finish_reason": None} if chat \
                else {"index": i, "text": text, "finish_reason": None}
            events.append({"id": ident, "object": kind, "created": 0, "model": model, "choices": [delta]})
        for i in range(n):
            end = {"index": i, "delta": {}, "finish_reason": "stop"} if chat else {"index": i, "text": "", "finish_reason": "stop"}
            events.append({"id": ident, "object": kind, "created": 0, "model": model, "choices": [end]})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def completion(path: str, body: dict, text: str, model: str, ident: str) -> dict:
    """An OpenAI response body with n identical choices (the judge is deterministic)."""
    n = int(body.get("n") or 1)
    prompt_tokens = len(prompt_of(path, body).split())
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
             "total_tokens": prompt_tokens + len(text.split())}
    if path.endswith("/chat/completions"):
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                    "logprobs": None} for i in range(n)]
        return {"id": ident, "object": "chat.completion", "created": 0, "model": body.get("model") or model,
                "choices": choices, "usage": usage}
    choices = [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i in range(n)]
    return {"id": ident, "object": "text_completion", "created": 0, "model": body.get("model") or model,
            "choices": choices, "usage": usage}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    judge: JudgeServer


class JudgeServer:
    """The server in a background thread: `with JudgeServer(script) as server: server.base_url`."""

    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None) -> None:
        self.script = script
        self.log_path = log_path
        self.stopping = threading.Event()
        self._log: list[dict] = []
        self._lock = threading.Lock()
        self._count = 0
        self.httpd = _Server((host, port), _Handler)
        self.httpd.judge = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def next_id(self) -> str:
        with self._lock:
            self._count += 1
            return f"judge-{self._count}"

    def record(self, entry: dict) -> None:
        with self._lock:
            self._log.append(entry)
            if self.log_path is not None:
                with open(self.log_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry) + "\n")

    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._log)

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="judge-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_interrupted(server: JudgeServer) -> None:
    """Answer requests until Ctrl-C or SIGTERM ends the process."""
    print(f"judge server listening on {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.httpd.server_close()
