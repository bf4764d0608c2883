"""Distribution fidelity of a child backend against its base over a fixed token corpus.

The windows and scored positions are those of `llama-perplexity --kl-divergence`
(tools/perplexity/perplexity.cpp, `perplexity()` and `kl_divergence()`), so that our numbers can
be checked against its output on the same text:

- the corpus is tokenised once, BOS first when the model adds one (`common_tokenize(ctx, text,
  true)`): `corpus_tokens`;
- it is cut into n_chunk = len(tokens) // n_ctx consecutive windows of n_ctx tokens (the tail
  left over is not scored), at most `n_windows` of them; at least 2 * n_ctx tokens are needed;
- in each window the first token is replaced by BOS when the model adds one ("add BOS token for
  the first batch of each chunk");
- the logits at positions first = n_ctx // 2 up to n_ctx - 2 are scored, each against the next
  token of the window: n_ctx - 1 - n_ctx // 2 tokens per window (the model always has at least
  half a window of context).

Both backends answer one window at a time and only the scored half of each answer is kept while
the other is computed, so memory is two half-windows of [n_ctx, vocab] float32 at most.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.backends.base import Backend
from harness.core.errors import UsageError
from harness.scoring.fidelity import FidelityAccumulator


def corpus_tokens(backend: Backend, text: str) -> list[int]:
    """The corpus as llama-perplexity tokenises its -f file: special tokens added (BOS when the model wants one)."""
    ids = backend.special_ids()
    tokens = backend.encode_text(text)
    return [int(ids["bos"])] + tokens if ids.get("add_bos") and ids.get("bos") is not None else tokens


def window_count(n_tokens: int, n_ctx: int, n_windows: int | None) -> int:
    """llama-perplexity's n_chunk: whole windows only, capped by --chunks; refused under 2 * n_ctx tokens."""
    if n_ctx < 4:
        raise UsageError(f"n_ctx={n_ctx} is too small: the second half of each window is scored")
    if n_tokens < 2 * n_ctx:
        raise UsageError(f"the corpus has {n_tokens} tokens; a context of {n_ctx} needs at least {2 * n_ctx} "
                         "(llama-perplexity's requirement)")
    if n_windows is not None and n_windows < 1:
        raise UsageError(f"n_windows={n_windows}: expected at least 1")
    available = n_tokens // n_ctx
    return available if n_windows is None else min(n_windows, available)


def model_window(window: Sequence[int], ids: dict) -> list[int]:
    """The window as the model reads it: its first token replaced by BOS when the model adds one."""
    tokens = list(window)
    if ids.get("add_bos") and ids.get("bos") is not None:
        tokens[0] = int(ids["bos"])
    return tokens


def scored_rows(backend: Backend, window: Sequence[int], first: int) -> np.ndarray:
    """Rows first .. len(window) - 2 of the backend's log-probabilities, copied so the rest is freed."""
    answers = list(backend.token_logprobs([window]))
    if len(answers) != 1 or answers[0][0] != 0:
        raise RuntimeError(f"backend {backend.name} answered {len(answers)} windows for one")
    rows = answers[0][1]
    if rows.shape[0] != len(window):
        raise RuntimeError(f"backend {backend.name} returned {rows.shape[0]} rows for a window of {len(window)}")
    return np.array(rows[first : len(window) - 1], dtype=np.float32)


def check_vocabularies(base_ids: dict, child_ids: dict) -> None:
    """KL needs the two distributions over one vocabulary: a child with another tokenizer is refused."""
    if int(base_ids["vocab_size"]) != int(child_ids["vocab_size"]):
        raise UsageError(f"the child's vocabulary has {child_ids['vocab_size']} tokens and the base's "
                         f"{base_ids['vocab_size']}: their distributions cannot be compared")


def measure_fidelity(base: Backend, child: Backend, tokens: list[int], n_ctx: int, n_windows: int | None) -> dict:
    """llama-perplexity --kl-divergence's statistics of `child` against `base` over `tokens`
    (see harness.scoring.fidelity.summarize), plus n_ctx and the number of windows scored."""
    base_ids, child_ids = base.special_ids(), child.special_ids()
    check_vocabularies(base_ids, child_ids)
    count = window_count(len(tokens), n_ctx, n_windows)
    first = n_ctx // 2
    accumulator = FidelityAccumulator()
    for k in range(count):
        window = tokens[k * n_ctx : (k + 1) * n_ctx]
        base_rows = scored_rows(base, model_window(window, base_ids), first)
        child_rows = scored_rows(child, model_window(window, child_ids), first)
        accumulator.add(base_rows, child_rows, window[first + 1 :])
        del base_rows, child_rows
    return accumulator.summary() | {"n_ctx": n_ctx, "windows": count}
