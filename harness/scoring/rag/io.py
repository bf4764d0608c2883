"""The RAG evaluation input: one JSON object per line (documented in docs/rag.md).

    {"question": str, "contexts": [str, ...], "answer": str, "ground_truth": str,
     "retrieved_ids": [id, ...], "relevant_ids": [id, ...], "retrieved_scores": [number, ...],
     "id": str}

question, contexts, answer and ground_truth are required; retrieved_ids and relevant_ids come
together or not at all; retrieved_scores (one per retrieved id, higher is better) is optional
and only needed to declare ties. Ids are strings or integers and compare as strings. Other
keys are kept out of the way (ignored). Every problem is one line: `FILE:LINE: what is wrong`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.hashing import sha256_file

REQUIRED = ("question", "contexts", "answer", "ground_truth")


@dataclass(frozen=True)
class RagSample:
    line: int  # 1-based line in the file
    question: str
    contexts: tuple[str, ...]
    answer: str
    ground_truth: str
    retrieved_ids: tuple[str, ...] | None = None
    relevant_ids: tuple[str, ...] | None = None
    retrieved_scores: tuple[float, ...] | None = None
    id: str | None = None

    @property
    def has_retrieval(self) -> bool:
        return self.retrieved_ids is not None and self.relevant_ids is not None

    def doc(self) -> dict:
        """The benchmark item (what two RAG systems share), as opposed to one system's output."""
        return {"question": self.question, "ground_truth": self.ground_truth,
                "relevant_ids": list(self.relevant_ids) if self.relevant_ids is not None else None}

    def output(self) -> dict:
        """What the evaluated system produced."""
        return {"answer": self.answer, "contexts": list(self.contexts),
                "retrieved_ids": list(self.retrieved_ids) if self.retrieved_ids is not None else None,
                "retrieved_scores": list(self.retrieved_scores) if self.retrieved_scores is not None else None}


class _Invalid(ValueError):
    pass


def _string(row: dict, key: str, nonempty: bool = False) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise _Invalid(f"'{key}' must be a string, got {type(value).__name__}")
    if nonempty and not value.strip():
        raise _Invalid(f"'{key}' is empty")
    return value


def _strings(row: dict, key: str) -> tuple[str, ...]:
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"'{key}' must be a list of strings")
    return tuple(value)


def _ids(row: dict, key: str) -> tuple[str, ...]:
    value = row[key]
    # bool is an int in Python but never a document id
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise _Invalid(f"'{key}' must be a list of string or integer ids")
    ids = tuple(str(v) for v in value)
    seen: set[str] = set()
    for doc in ids:
        if doc in seen:
            raise _Invalid(f"'{key}' lists id {doc!r} twice")
        seen.add(doc)
    return ids


def _scores(row: dict, n: int) -> tuple[float, ...]:
    value = row["retrieved_scores"]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _Invalid("'retrieved_scores' must be a list of numbers")
    if len(value) != n:
        raise _Invalid(f"'retrieved_scores' has {len(value)} scores for {n} retrieved ids")
    if not all(math.isfinite(v) for v in value):
        raise _Invalid("'retrieved_scores' must be finite numbers")
    return tuple(float(v) for v in value)


def parse_sample(row: object, line: int) -> RagSample:
    if not isinstance(row, dict):
        raise _Invalid(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise _Invalid(f"missing {', '.join(repr(k) for k in missing)}")
    has_retrieved, has_relevant = "retrieved_ids" in row, "relevant_ids" in row
    if has_retrieved != has_relevant:
        raise _Invalid("'retrieved_ids' and 'relevant_ids' must be given together")
    if "retrieved_scores" in row and not has_retrieved:
        raise _Invalid("'retrieved_scores' needs 'retrieved_ids'")
    retrieved = _ids(row, "retrieved_ids") if has_retrieved else None
    sample_id = row.get("id")
    if sample_id is not None and not isinstance(sample_id, (str, int)):
        raise _Invalid("'id' must be a string or an integer")
    return RagSample(
        line=line,
        question=_string(row, "question", nonempty=True),
        contexts=_strings(row, "contexts"),
        answer=_string(row, "answer"),
        ground_truth=_string(row, "ground_truth"),
        retrieved_ids=retrieved,
        relevant_ids=_ids(row, "relevant_ids") if has_relevant else None,
        retrieved_scores=_scores(row, len(retrieved)) if "retrieved_scores" in row and retrieved is not None else None,
        id=None if sample_id is None else str(sample_id),
    )


def load_samples(path: Path) -> list[RagSample]:
    """Read and validate a RAG JSONL file; any problem is a UsageError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    samples: list[RagSample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
        try:
            samples.append(parse_sample(row, number))
        except _Invalid as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
    if not samples:
        raise UsageError(f"{path}: no samples (expected one JSON object per line)")
    return samples


def data_fingerprint(path: Path) -> str:
    return sha256_file(Path(path))
