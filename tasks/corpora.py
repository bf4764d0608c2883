"""Fixed text corpora, registered by name, for measurements over running text (distribution
fidelity of a child checkpoint against its parent, perplexity).

A corpus is a loader returning one text; `corpus_text` gives it with its sha256, so a stored
measurement names exactly the text it was made on. The built-in corpora come from the committed
fixtures, so they are small, offline and the same on every machine:

- "gsm8k-train": the GSM8K train fixture's questions and worked answers, in file order, every
  question and every answer its own paragraph (joined by blank lines);
- "hellaswag-val": the HellaSwag validation fixture, each row's context followed by its gold
  ending (the three wrong endings would make incoherent text), one paragraph per row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.hashing import sha256_text
from harness.core.resources import package_dir
from harness.taskkit import files

_CORPORA: dict[str, Callable[[], str]] = {}


def register_corpus(name: str, loader: Callable[[], str]) -> None:
    _CORPORA[name] = loader


def corpus_names() -> list[str]:
    return sorted(_CORPORA)


def corpus_text(name: str) -> tuple[str, str]:
    """(text, sha256 of its UTF-8 bytes)."""
    if name not in _CORPORA:
        raise UsageError(f"unknown corpus {name!r}: expected one of {', '.join(corpus_names())}")
    text = _CORPORA[name]()
    return text, sha256_text(text)


def _fixture(*parts: str) -> Path:
    return package_dir("harness.tasks").joinpath("fixtures", *parts)


def gsm8k_train() -> str:
    rows = files.read_jsonl(_fixture("gsm8k", "train.jsonl"), lambda r: (r["question"].strip(), r["answer"].strip()))
    return "\n\n".join(part for row in rows for part in row)


def _hellaswag_paragraph(row: dict) -> str:
    context = row["ctx"] if "ctx" in row else row["query"]
    ending = row["endings"][files.choice_index(row["label"], len(row["endings"]))]
    return f"{context.strip()} {ending.strip()}"


def hellaswag_val() -> str:
    return "\n\n".join(files.read_jsonl(_fixture("hellaswag", "hellaswag_val.jsonl"), _hellaswag_paragraph))


register_corpus("gsm8k-train", gsm8k_train)
register_corpus("hellaswag-val", hellaswag_val)
