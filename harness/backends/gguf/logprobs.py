"""Full next-token log-probabilities from a llama.cpp model: the window evaluated afresh.

Same convention as the hf backend and as llama.cpp itself: `llama.scores[t]` are the logits read
after token t, so row t of the result is log p(. | window[:t+1]). The context is cleared for
every window (llama-perplexity clears its KV cache per chunk too), which also keeps the answer
independent of what the loglikelihood scorer left cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from harness.core.errors import UsageError

ROW_BLOCK = 64  # rows per float64 reduction: bounds the temporary at 64 x vocab doubles


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """float32 log-softmax of each row: exp in float32, the sum accumulated in float64, as
    llama.cpp's perplexity.cpp does (expf, a double sum_exp)."""
    out = np.empty(logits.shape, dtype=np.float32)
    for start in range(0, len(logits), ROW_BLOCK):
        rows = np.asarray(logits[start : start + ROW_BLOCK], dtype=np.float32)
        shifted = rows - rows.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64))
        out[start : start + ROW_BLOCK] = shifted - log_norm[:, None].astype(np.float32)
    return out


def window_logprobs(llama: Any, window: Sequence[int]) -> np.ndarray:
    """float32 [len(window), n_vocab] for one window, through a freshly reset context."""
    if not window:
        return np.zeros((0, llama.n_vocab()), dtype=np.float32)
    llama.reset()
    llama.eval(list(window))
    return log_softmax_rows(llama.scores[: len(window)])


def iter_logprobs(llama: Any, windows: Sequence[Sequence[int]], n_ctx: int) -> Iterator[tuple[int, np.ndarray]]:
    for i, window in enumerate(windows):
        if len(window) > n_ctx:
            raise UsageError(f"token_logprobs window {i} has {len(window)} tokens, more than n_ctx={n_ctx}")
    for i, window in enumerate(windows):
        yield i, window_logprobs(llama, window)
