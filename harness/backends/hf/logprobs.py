"""Full next-token log-probabilities from a transformers causal LM, one forward pass per window.

Distribution fidelity (harness/scoring/fidelity.py) compares whole rows of a child model's
distribution with its parent's, so every position's log-softmax is returned, not the log p of one
continuation. The log-softmax is taken in float32 whatever the model's dtype, so a bfloat16 child
is judged on its logits, not on bfloat16 rounding of its probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from harness.core.errors import UsageError


def check_windows(windows: Sequence[Sequence[int]], max_length: int, what: str) -> None:
    """Refuse, before any forward pass, a window the model cannot read in one piece."""
    for i, window in enumerate(windows):
        if len(window) > max_length:
            raise UsageError(f"token_logprobs window {i} has {len(window)} tokens, more than {what}={max_length}")


def window_logprobs(model: Any, window: Sequence[int]) -> np.ndarray:
    """float32 [len(window), vocab]: row t is log p(. | window[:t+1]) (no padding, no attention mask)."""
    import torch

    if not window:
        return np.zeros((0, int(model.config.vocab_size)), dtype=np.float32)
    ids = torch.tensor([list(window)], dtype=torch.long, device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
        rows = torch.log_softmax(logits.float(), dim=-1)
    return rows.cpu().numpy()


def iter_logprobs(model: Any, windows: Sequence[Sequence[int]], max_length: int) -> Iterator[tuple[int, np.ndarray]]:
    check_windows(windows, max_length, "max_length")
    for i, window in enumerate(windows):
        yield i, window_logprobs(model, window)


def tokenizer_special_ids(tokenizer: Any, vocab_size: int) -> dict:
    """BOS, EOS, whether encoding with special tokens prepends BOS (llama-perplexity puts BOS first in
    each window only then), and the logits' width."""
    bos = tokenizer.bos_token_id
    probe = list(tokenizer.encode("a", add_special_tokens=True))
    add_bos = bos is not None and bool(probe) and probe[0] == bos
    return {"bos": bos, "eos": tokenizer.eos_token_id, "add_bos": add_bos, "vocab_size": int(vocab_size)}
