"""A local OpenAI-compatible server with correct prompt logprobs, over the `hf` backend's model.

    python -m tests.servers.logprob_server --model smollm2-135m-instruct --port 8000 [--model-name NAME]
        [--echo-bug] [--chat-only] [--api-key-env NAME]

Endpoints: GET /v1/models; POST /v1/completions (prompt: a string, a list of strings, token ids
or lists of them; echo, logprobs=k with tokens / token_logprobs / top_logprobs / text_offset in
the legacy OpenAI and vLLM layout, the first prompt token's logprob null; max_tokens 0 allowed;
temperature, seed, n, stop, stream); POST /v1/chat/completions (messages through the model's chat
template; temperature, seed, n, stop, stream). Streams are server-sent events, sent as tokens are
generated (text that might begin a stop string is held back until it cannot).

Test modes: --echo-bug reports log p(token_i | tokens <= i) like llama-cpp-python's echo (the
probe must refuse it); --chat-only answers 404 on /v1/completions like a chat-only API;
--api-key-env NAME answers 401 unless `Authorization: Bearer $NAME` is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.servers.logprob_model import BadRequest, Choice, LogprobModel, Sampling, TokenLogprob

MAX_TOP_LOGPROBS = 20  # vLLM's default max_logprobs


@dataclass
class ServerConfig:
    model_name: str
    chat_only: bool = False
    api_key: str | None = None
    created: int = 0  # fixed: the model list must not change between requests


class NotFound(Exception):
    pass


def _sampling(body: dict, default_max: int) -> Sampling:
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(str(s) for s in stop)
    logprobs = body.get("logprobs")
    if logprobs is True:  # the chat API's boolean form, with its top_logprobs count
        logprobs = body.get("top_logprobs") or 0
    if logprobs is not None and logprobs is not False:
        if not isinstance(logprobs, int) or not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}]")
    else:
        logprobs = None
    max_tokens = body.get("max_tokens", default_max)
    if max_tokens is None:
        max_tokens = default_max
    if not isinstance(max_tokens, int) or max_tokens < 0:
        raise BadRequest("max_tokens must be a non-negative integer")
    temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
    seed = body.get("seed")
    return Sampling(max_tokens, temperature, None if seed is None else int(seed), stop, logprobs)


def _prompts(model: LogprobModel, prompt: Any) -> list[tuple[str, list[int]]]:
    """(text, token ids) per prompt, for every prompt form the completions API accepts."""
    if isinstance(prompt, str):
        return [(prompt, model.encode(prompt))]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [(model.decode(prompt), list(prompt))]
    if isinstance(prompt, list) and prompt:
        return [p for item in prompt for p in _prompts(model, item)]
    raise BadRequest("prompt must be a non-empty string, list of strings, or token ids")


def _logprobs_block(tokens: list[TokenLogprob], start: int) -> dict:
    offsets, position = [], start
    for t in tokens:
        offsets.append(position)
        position += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [t.top for t in tokens], "text_offset": offsets}


def completion_choices(model: LogprobModel, body: dict, on_text: Callable[[int, str], None] | None = None) -> tuple[list[dict], dict]:
    sampling = _sampling(body, default_max=16)
    n, echo = int(body.get("n") or 1), bool(body.get("echo"))
    choices: list[dict] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for p, (text, ids) in enumerate(_prompts(model, body.get("prompt"))):
        prefill, generated = model.run(ids, sampling, n,
                                       on_text=(lambda j, piece, p=p: on_text(p * n + j, piece)) if on_text else None)
        prompt_tokens = []
        if echo and sampling.top_logprobs is not None:
            prompt_tokens = model.prompt_logprobs(prefill, model.prompt_pieces(text, ids), sampling.top_logprobs)
        usage["prompt_tokens"] += len(ids)
        for j, choice in enumerate(generated):
            usage["completion_tokens"] += len(choice.tokens)
            choices.append(_completion_choice(p * n + j, text, prompt_tokens, choice, echo, sampling))
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return choices, usage


def _completion_choice(index: int, prompt: str, prompt_tokens: list[TokenLogprob], choice: Choice, echo: bool,
                       sampling: Sampling) -> dict:
    logprobs = None
    if sampling.top_logprobs is not None:
        generated = choice.tokens
        if sum(len(t.text) for t in generated) > len(choice.text):  # cut at a stop string: drop what follows
            kept, start = [], 0
            for t in generated:
                if start >= len(choice.text):
                    break
                kept.append(t)
                start += len(t.text)
            generated = kept
        logprobs = _logprobs_block((prompt_tokens if echo else []) + generated, 0 if echo else len(prompt))
    return {"index": index, "text": (prompt if echo else "") + choice.text, "logprobs": logprobs,
            "finish_reason": choice.finish_reason}


def chat_choices(model: LogprobModel, body: dict, on_text: Callable[[int, str], None] | None = None) -> tuple[list[dict], dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise BadRequest("messages must be a non-empty list of {role, content}")
    sampling = _sampling(body, default_max=256)
    n = int(body.get("n") or 1)
    ids = model.chat_ids(messages, sampling.max_tokens)
    _, generated = model.run(ids, sampling, n, on_text=on_text)
    choices = [{"index": j, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
               for j, c in enumerate(generated)]
    completion = sum(len(c.tokens) for c in generated)
    return choices, {"prompt_tokens": len(ids), "completion_tokens": completion, "total_tokens": len(ids) + completion}


def make_handler(model: LogprobModel, config: ServerConfig) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            if os.environ.get("LOGPROB_SERVER_VERBOSE"):
                super().log_message(format, *args)

        def _send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send_json(status, {"error": {"message": message, "type": kind, "code": status}})

        def _authorized(self) -> bool:
            if config.api_key is None or self.headers.get("Authorization") == f"Bearer {config.api_key}":
                return True
            self._error(401, "invalid or missing API key", "authentication_error")
            return False

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/models":
                return self._error(404, f"no route {self.path}", "not_found")
            entry = {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "harness",
                     "root": model.backend.spec.target, "max_model_len": model.max_length,
                     "meta": {"weights_fingerprint": model.fingerprint(), "echo_bug": model.echo_bug}}
            self._send_json(200, {"object": "list", "data": [entry]})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            path = self.path.rstrip("/")
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                if body.get("model") != config.model_name:
                    raise NotFound(f"The model `{body.get('model')}` does not exist.")
                if path == "/v1/completions" and not config.chat_only:
                    self._answer(body, completion_choices, "text_completion")
                elif path == "/v1/chat/completions":
                    self._answer(body, chat_choices, "chat.completion")
                else:
                    raise NotFound(f"no route {self.path}")
            except NotFound as error:
                self._error(404, str(error), "not_found")
            except (BadRequest, ValueError, TypeError) as error:
                self._error(400, str(error), "invalid_request_error")

        def _answer(self, body: dict, compute: Callable, kind: str) -> None:
            head = {"id": f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:16]}",
                    "created": int(time.time()), "model": config.model_name}
            if body.get("stream"):
                return self._stream(body, compute, kind, head)
            choices, usage = compute(model, body)
            self._send_json(200, {**head, "object": kind, "choices": choices, "usage": usage})

        def _stream(self, body: dict, compute: Callable, kind: str, head: dict) -> None:
            chat = kind.startswith("chat")
            started: set[int] = set()
            headers_sent: list[bool] = []

            def event(choice: dict) -> None:
                if not headers_sent:  # headers go with the first event: errors before it are plain JSON
                    headers_sent.append(True)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")  # no length: the end of the body ends the stream
                    self.end_headers()
                    self.close_connection = True
                obj = "chat.completion.chunk" if chat else "text_completion"
                self.wfile.write(f"data: {json.dumps({**head, 'object': obj, 'choices': [choice]})}\n\n".encode())
                self.wfile.flush()

            def on_text(index: int, piece: str) -> None:
                if chat:
                    delta = {"content": piece} | ({"role": "assistant"} if index not in started else {})
                    event({"index": index, "delta": delta, "finish_reason": None})
                else:
                    event({"index": index, "text": piece, "logprobs": None, "finish_reason": None})
                started.add(index)

            stream_body = {**body, "echo": False}  # an echoed prompt is not streamed back
            choices, _ = compute(model, stream_body, on_text)
            for choice in choices:
                end = {"index": choice["index"], "finish_reason": choice["finish_reason"]}
                event(end | ({"delta": {}} if chat else {"text": "", "logprobs": None}))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.logprob_server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="hf checkpoint dir, hub id, or the embedded alias")
    parser.add_argument("--model-name", help="the id clients send as `model` (default: the directory name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--echo-bug", action="store_true", help="report log p(token_i | tokens <= i), like llama.cpp")
    parser.add_argument("--chat-only", action="store_true", help="404 on /v1/completions")
    parser.add_argument("--api-key-env", help="require `Authorization: Bearer $NAME`")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, capped at the CPUs allowed)")
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env {args.api_key_env}: that variable is not set")
    model = LogprobModel(args.model, echo_bug=args.echo_bug)
    if args.threads:  # after loading: the hf backend sets its own cap while it loads
        import torch

        torch.set_num_threads(args.threads)
    name = args.model_name or Path(args.model.rstrip("/")).name
    config = ServerConfig(name, chat_only=args.chat_only, api_key=api_key)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(model, config))
    server.daemon_threads = True
    print(f"logprob_server: serving {name} on http://{args.host}:{server.server_port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
