"""Loglikelihoods from a llama.cpp model: lm-eval's token sequences, scored from the logits.

`LlamaTokens` gives hf_tokens.py the tokenizer interface it expects, so context and continuation
are split exactly as lm-eval's `_encode_pair` does for the hf backend. `PrefixScorer` scores
requests one after another through the one KV cache of a `llama_cpp.Llama`: requests sorted by
their tokens follow each other with the longest shared prefix, and only the tokens after it are
evaluated. The log-softmax is taken over the raw logits in float64 rather than read from
`create_completion(echo=True)` logprobs, which are shifted by one position.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.backends.tokens import TokenRequest


class LlamaTokens:
    """The slice of a transformers tokenizer that hf_tokens.py uses, over llama.cpp's tokenizer.

    `add_special_tokens` maps to llama.cpp's `add_special`, which adds BOS only where the GGUF
    says the model wants one, as a transformers tokenizer's post-processor does. Special tokens
    written in the text are parsed as such, as transformers does by default.
    """

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        bos = llama.token_bos()
        self.bos_token_id: int | None = bos if bos >= 0 else None
        self.eos_token_id: int = llama.token_eos()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True))

    def decode(self, ids: int | Sequence[int]) -> str:
        tokens = [ids] if isinstance(ids, int) else list(ids)
        return self.llama.detokenize(tokens, special=True).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Score:
    logprob: float
    is_greedy: bool


def log_softmax_at(logits: np.ndarray, targets: Sequence[int]) -> Score:
    """Sum of log p(target_i) over rows of float32 logits, computed in float64."""
    rows = logits.astype(np.float64)
    peak = rows.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
    picked = rows[np.arange(len(targets)), np.asarray(targets)]
    return Score(float((picked - log_norm).sum()), bool((rows.argmax(axis=1) == np.asarray(targets)).all()))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixScorer:
    """Scores TokenRequests through one llama.cpp context, reusing the cached prefix."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        # Recurrent state cannot be cut back to a prefix: such models start afresh every time.
        self.reusable = not (getattr(llama, "_is_recurrent", False) or getattr(llama, "_is_hybrid", False))
        self.evaluated_tokens = 0  # tokens actually run through the model (tests read it)

    def score(self, request: TokenRequest) -> Score:
        llama = self.llama
        inputs = list(request.context) + list(request.continuation)[:-1]
        cached = llama.input_ids[: llama.n_tokens]
        keep = common_prefix(cached, inputs) if self.reusable else 0
        if keep < len(inputs):
            # Logits of positions before `keep` stay valid in llama.scores (causal attention:
            # they depend on the shared tokens only); eval() drops the KV cache past n_tokens.
            if keep == 0:
                llama.reset()
            llama.n_tokens = keep
            llama.eval(inputs[keep:])
            self.evaluated_tokens += len(inputs) - keep
        first = len(request.context) - 1  # the position whose logits predict continuation[0]
        return log_softmax_at(llama.scores[first : len(inputs)], request.continuation)


def score_all(scorer: PrefixScorer, requests: Mapping[int, TokenRequest]) -> Iterator[tuple[int, Score]]:
    """Scores in token order, so that requests sharing a context (or a few-shot prefix) follow
    each other and the shared part is evaluated once; yields (key, Score) as each finishes."""
    order = sorted(requests, key=lambda k: requests[k].context + requests[k].continuation)
    for key in order:
        yield key, scorer.score(requests[key])
