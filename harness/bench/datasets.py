"""Prompts for serving benchmarks: random tokens, a registered task's documents, a ShareGPT file.

`--dataset random` (the default) draws token ids uniformly from the tokenizer's ordinary
vocabulary, as vLLM's random dataset, so every prompt has exactly `input_len` tokens in the
engine that receives ids (in-process); over HTTP the text is decoded and the server re-tokenizes
it (its usage reports the true count). `task:NAME` takes the prompts of a registered task's
documents; `sharegpt:PATH` the first human turn of each conversation, with vLLM's filters.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from harness.core.errors import UsageError

# vLLM's ShareGPT filters: too short to mean anything, or too long for common context windows.
SHAREGPT_MIN_TOKENS = 4
SHAREGPT_MAX_PROMPT = 1024
SHAREGPT_MAX_TOTAL = 2048


@dataclass(frozen=True)
class BenchPrompt:
    text: str
    token_ids: tuple[int, ...] | None  # exact ids for in-process engines
    input_len: int | None  # tokens in the prompt by our tokenizer
    output_len: int  # max_tokens to ask for
    messages: tuple[dict, ...] | None = None  # chat messages when the source has them


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def count(self, texts: list[str]) -> list[int]: ...

    def ordinary_ids(self) -> np.ndarray: ...


class HFTokenizer:
    """A `tokenizers` tokenizer.json (fast to load) or, failing that, a transformers tokenizer."""

    def __init__(self, name: str, tokenizer: object, special: set[int], vocab_size: int) -> None:
        self.name = name
        self._tok = tokenizer
        self._special = special
        self._vocab_size = vocab_size

    @classmethod
    def load(cls, source: str) -> HFTokenizer:
        from harness.backends import embedded

        path = Path(source)
        if source in ("embedded", embedded.EMBEDDED_ALIAS):
            path, source = embedded.ensure_hf_dir(), embedded.EMBEDDED_ALIAS
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as RustTokenizer

            tok = RustTokenizer.from_file(str(path / "tokenizer.json"))
            special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
            ids = {tok.token_to_id(s) for s in special} - {None}
            return cls(source, tok, ids, tok.get_vocab_size(with_added_tokens=True))  # type: ignore[arg-type]
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load tokenizer {source!r}: {str(exc).splitlines()[0]}") from None
        return cls(source, hf._tokenizer if hasattr(hf, "_tokenizer") else hf, set(hf.all_special_ids), len(hf))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]  # type: ignore[attr-defined]

    def ordinary_ids(self) -> np.ndarray:
        ids = np.arange(self._vocab_size)
        return ids[~np.isin(ids, list(self._special))] if self._special else ids


def random_prompts(tokenizer: Tokenizer, n: int, input_len: int, output_len: int, seed: int,
                   range_ratio: float = 0.0) -> list[BenchPrompt]:
    """n prompts of input_len random ordinary tokens (± range_ratio, as vLLM's random dataset)."""
    if input_len < 1 or output_len < 1:
        raise UsageError("--input-len and --output-len must be at least 1")
    if not 0.0 <= range_ratio < 1.0:
        raise UsageError("--range-ratio must be in [0, 1)")
    rng = np.random.default_rng(seed)
    vocab = tokenizer.ordinary_ids()
    prompts = []
    for _ in range(n):
        lo, hi = int(input_len * (1 - range_ratio)), int(input_len * (1 + range_ratio))
        in_len = max(1, int(rng.integers(lo, hi + 1))) if hi > lo else input_len
        lo, hi = int(output_len * (1 - range_ratio)), int(output_len * (1 + range_ratio))
        out_len = max(1, int(rng.integers(lo, hi + 1))) if hi > lo else output_len
        ids = [int(i) for i in rng.choice(vocab, size=in_len)]
        prompts.append(BenchPrompt(tokenizer.decode(ids), tuple(ids), in_len, out_len))
    return prompts


def task_prompts(task_name: str, tokenizer: Tokenizer | None, n: int, output_len: int, seed: int) -> list[BenchPrompt]:
    """The prompts a registered task would send, zero-shot, from its first n documents."""
    from harness import tasks as catalog
    from harness.core.requests import Generate

    task = catalog.get_task(task_name)
    instances = task.build(task.load(), n, 0, seed)
    if not instances:
        raise UsageError(f"task {task_name} has no documents")
    prompts = []
    for inst in instances:
        generate = next((r for r in inst.requests if isinstance(r, Generate)), None)
        messages = tuple({"role": m.role, "content": m.content} for m in generate.messages) if generate and generate.messages else None
        text = generate.prompt if generate and generate.prompt is not None else inst.prompt
        ids = tuple(tokenizer.encode(text)) if tokenizer is not None else None
        prompts.append(BenchPrompt(text, ids, len(ids) if ids is not None else None, output_len, messages))
    return prompts


def sharegpt_prompts(path: Path, tokenizer: Tokenizer, n: int, output_len: int | None, seed: int) -> list[BenchPrompt]:
    """First human turn of each conversation; the reply's token count is the output length unless fixed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read ShareGPT file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"ShareGPT file {path} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise UsageError(f"ShareGPT file {path}: expected a JSON list of {{'conversations': [...]}} entries")
    pairs = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, dict) and "value" in t for t in turns[:2]):
            pairs.append((str(turns[0]["value"]), str(turns[1]["value"])))
    if not pairs:
        raise UsageError(f"ShareGPT file {path} has no conversation with two turns")
    random.Random(seed).shuffle(pairs)
    prompts: list[BenchPrompt] = []
    for prompt, reply in pairs:
        ids = tokenizer.encode(prompt)
        out = output_len if output_len is not None else len(tokenizer.encode(reply))
        if len(ids) < SHAREGPT_MIN_TOKENS or (output_len is None and out < SHAREGPT_MIN_TOKENS):
            continue
        if len(ids) > SHAREGPT_MAX_PROMPT or len(ids) + out > SHAREGPT_MAX_TOTAL:
            continue
        prompts.append(BenchPrompt(prompt, tuple(ids), len(ids), out, ({"role": "user", "content": prompt},)))
        if len(prompts) == n:
            break
    if not prompts:
        raise UsageError(f"ShareGPT file {path}: no conversation passes the length filters")
    return prompts


def check_dataset(dataset: str) -> None:
    """Refuse a malformed --dataset before any model loads or any server is contacted."""
    kind, _, arg = dataset.partition(":")
    if kind == "random" and not arg:
        return
    if kind == "task" and arg:
        from harness import tasks as catalog

        catalog.get_task(arg)  # an unknown task is a UsageError with a suggestion
        return
    if kind == "sharegpt" and arg:
        if not Path(arg).is_file():
            raise UsageError(f"ShareGPT file {arg} does not exist")
        return
    raise UsageError(f"unknown --dataset {dataset!r}: expected random, task:NAME or sharegpt:PATH")


def load_prompts(dataset: str, tokenizer: Tokenizer | None, *, n: int, input_len: int, output_len: int | None,
                 seed: int, range_ratio: float = 0.0) -> list[BenchPrompt]:
    """`random`, `task:NAME` or `sharegpt:PATH` -> prompts (at most n; the load cycles through them)."""
    kind, _, arg = dataset.partition(":")
    if kind == "random":
        if tokenizer is None:
            raise UsageError("the random dataset needs a tokenizer (--tokenizer)")
        return random_prompts(tokenizer, n, input_len, output_len or 128, seed, range_ratio)
    if kind == "task" and arg:
        return task_prompts(arg, tokenizer, n, output_len or 128, seed)
    if kind == "sharegpt" and arg:
        if tokenizer is None:
            raise UsageError("the sharegpt dataset needs a tokenizer (--tokenizer)")
        return sharegpt_prompts(Path(arg), tokenizer, n, output_len, seed)
    raise UsageError(f"unknown --dataset {dataset!r}: expected random, task:NAME or sharegpt:PATH")
