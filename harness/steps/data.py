"""Training examples for a fine-tuning step: chat conversations from a task's train split or a JSONL file.

A step's `data` parameter is one of

- `task:gsm8k`: GSM8K's train split (what `get_task("gsm8k").load().fewshot_docs` holds: the
  mirror's, the pinned hub revision's, or the fixture's 50 rows), user = the question, assistant
  = the full worked answer ending in "#### N" (lm-eval's doc_to_target), so a tuned model learns
  the format the strict-match filter reads;
- `task:mbpp`: MBPP's train split (task ids 601-974) then its prompt split (1-10), read from the
  same place as the mbpp task (the mirror, else the fixture, which holds prompt rows 2-4 only),
  user = lm-eval's problem text with its three asserts, assistant = the reference code (line
  endings made "\\n": some rows carry "\\r\\n", which the model would otherwise learn to emit);
- a path to a JSON-lines file of `{"messages": [{"role": ..., "content": ...}, ...]}`.

Every conversation must end with an assistant turn: the steps train on that last turn (see
lora.py). `limit` keeps the first N examples in file order, so the same recipe reads the same
rows. The fingerprint is the sha256 of the examples' canonical JSON (not of the file), so two
files that parse to the same conversations train the same child.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json

TASK_PREFIX = "task:"
ROLES = ("system", "user", "assistant")
MBPP_TRAIN_IDS = range(601, 975)
MBPP_PROMPT_IDS = range(1, 11)
DATA_HELP = 'task:gsm8k | task:mbpp | PATH.jsonl of {"messages": [{"role", "content"}, ...]}'

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class TrainingData:
    examples: list[Messages]  # one conversation per example, each ending with an assistant turn
    fingerprint: str  # sha256 of the examples' canonical JSON
    source: str  # where they came from: "task:gsm8k (fixture:...)" or the file path


def _gsm8k_examples() -> tuple[list[Messages], str]:
    from harness.tasks import get_task

    dataset = get_task("gsm8k").load()
    examples = [[{"role": "user", "content": doc["question"]}, {"role": "assistant", "content": doc["answer"]}]
                for doc in dataset.fewshot_docs]
    return examples, dataset.source


def _mbpp_rows(root: Path) -> tuple[list[dict], list[dict]]:
    from harness.tasks import mbpp

    rows = mbpp.read_rows(root / "mbpp" / "mbpp.jsonl")
    return [rows[i] for i in (*MBPP_TRAIN_IDS, *MBPP_PROMPT_IDS) if i in rows], []


def _mbpp_examples() -> tuple[list[Messages], str]:
    # the mbpp task loads the test and few-shot rows only; this loads the training rows through
    # the same source logic (mirror, else fixture), memoised under its own name
    from harness.taskkit import data
    from harness.tasks import mbpp

    dataset = data.load("mbpp_train", dir_loader=_mbpp_rows, hub=None, hub_loader=None)
    examples = [[{"role": "user", "content": mbpp.doc_to_text(doc).removesuffix("\n[BEGIN]\n")},
                 {"role": "assistant", "content": doc["code"].replace("\r\n", "\n")}]
                for doc in dataset.docs]
    return examples, dataset.source


TASK_SOURCES: dict[str, Callable[[], tuple[list[Messages], str]]] = {"gsm8k": _gsm8k_examples, "mbpp": _mbpp_examples}


def _conversation(row: Any) -> Messages:
    """One JSONL row's messages, checked; ValueError says what is wrong (read_jsonl adds file:line)."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise ValueError('expected {"messages": [{"role": ..., "content": ...}, ...]} with at least one message')
    messages = []
    for n, message in enumerate(row["messages"], 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            got = message.get("role") if isinstance(message, dict) else message
            raise ValueError(f"message {n} has role {got!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {n} has no string content")
        messages.append({"role": message["role"], "content": message["content"]})
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise ValueError("no user message")
    if roles[-1] != "assistant":
        raise ValueError("the last message is not the assistant's (it is what the step trains on)")
    return messages


def _file_examples(kind: str, path: Path) -> list[Messages]:
    from harness.taskkit import files

    if not path.is_file():
        raise UsageError(f"step {kind}: data={path}: no such file (expected {DATA_HELP})")
    try:
        return files.read_jsonl(path, _conversation)
    except UsageError as error:
        raise UsageError(f"step {kind}: data: {error}") from None


def check_source(kind: str, data: Any) -> str:
    """The `data` parameter, refused in one line when it names no known task or no file."""
    if not isinstance(data, str) or not data.strip():
        raise UsageError(f"step {kind}: parameter data is required: {DATA_HELP}")
    if data.startswith(TASK_PREFIX):
        name = data.removeprefix(TASK_PREFIX)
        if name not in TASK_SOURCES:
            raise UsageError(f"step {kind}: data={data}: no training split for task {name!r}; "
                             f"expected one of {', '.join(TASK_PREFIX + t for t in TASK_SOURCES)}")
    elif not Path(data).expanduser().is_file():
        raise UsageError(f"step {kind}: data={data}: no such file (expected {DATA_HELP})")
    return data


def load_examples(kind: str, data: str, limit: int | None) -> TrainingData:
    """The first `limit` examples (all if None) of a source, with their fingerprint."""
    check_source(kind, data)
    if data.startswith(TASK_PREFIX):
        examples, where = TASK_SOURCES[data.removeprefix(TASK_PREFIX)]()
        source = f"{data} ({where})"
    else:
        path = Path(data).expanduser()
        examples, source = _file_examples(kind, path), str(path.resolve())
    if not examples:
        raise UsageError(f"step {kind}: data={data} has no training examples ({source})")
    if limit is not None:
        if limit > len(examples):
            raise UsageError(f"step {kind}: limit={limit} but data={data} has only {len(examples)} examples ({source})")
        examples = examples[:limit]
    return TrainingData(examples, sha256_json(examples), source)
