"""Tokenisation with lm-evaluation-harness 0.4.13 semantics (HFLM, causal models).

Scores are only comparable with lm-eval if the token sequences are identical, so these functions
mirror `TemplateLM.loglikelihood`, `TemplateLM._encode_pair`, `HFLM.tok_encode`,
`HFLM._loglikelihood_tokens`' left truncation and `utils.get_rolling_token_windows` /
`make_disjoint_window`. They are reimplemented, not imported: lm-eval is a dev dependency only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenRequest:
    """One scored span: log p(continuation | context) over token ids, context already truncated."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


def prefix_token_id(tokenizer: Any) -> int:
    """lm-eval conditions an empty context on BOS, or EOS where the tokenizer has no BOS."""
    bos = tokenizer.bos_token_id
    return int(bos) if bos is not None else int(tokenizer.eos_token_id)


def tok_encode(tokenizer: Any, text: str, prefix_id: int) -> list[int]:
    """HFLM.tok_encode: the tokenizer's own special-token default, unless the text already starts
    with the prefix token's text (then no second BOS is added)."""
    if text.startswith(tokenizer.decode(prefix_id)):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def encode_pair(tokenizer: Any, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """Context and continuation tokens exactly as lm-eval builds them for a loglikelihood request."""
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        if not cont:
            return [prefix_id], []
        if cont[0] != prefix_id:
            return [prefix_id], cont
        return cont[:1], cont[1:]
    # Trailing spaces belong to the continuation: "Answer: " + "A" must tokenise as "Answer:" + " A".
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    # Encode the whole and split at the context's length, so merges across the boundary go to
    # the continuation the way lm-eval does it.
    whole = tok_encode(tokenizer, context + continuation, prefix_id)
    context_enc = tok_encode(tokenizer, context, prefix_id)
    return context_enc, whole[len(context_enc):]


def truncate(context: Sequence[int], continuation: Sequence[int], max_length: int) -> TokenRequest:
    """lm-eval feeds (context + continuation)[-(max_length + 1):][:-1]; keep the same window.

    The continuation must fit (lm-eval asserts the same), so at least one context token is left
    to predict the continuation's first token.
    """
    if len(continuation) > max_length:
        raise ValueError(f"continuation of {len(continuation)} tokens exceeds max_length {max_length}")
    window = (list(context) + list(continuation))[-(max_length + 1):]
    return TokenRequest(tuple(window[: len(window) - len(continuation)]), tuple(continuation))


def rolling_windows(tokens: Sequence[int], prefix_id: int, max_length: int) -> Iterator[TokenRequest]:
    """get_rolling_token_windows(context_len=1) followed by make_disjoint_window."""
    tokens = list(tokens)
    if not tokens:
        return
    first_len = min(max_length, len(tokens))
    yield _disjoint([prefix_id] + tokens[: first_len - 1], tokens[:first_len])
    predicted = first_len
    while predicted < len(tokens):
        pred_len = min(len(tokens) - predicted, max_length)
        end = predicted + pred_len
        yield _disjoint(tokens[end - max_length - 1 : end - 1], tokens[end - pred_len : end])
        predicted += pred_len


def _disjoint(inputs: list[int], predicted: list[int]) -> TokenRequest:
    # Drop the inputs that overlap the predicted span; the model re-reads them as continuation.
    return TokenRequest(tuple(inputs[: len(inputs) - (len(predicted) - 1)]), tuple(predicted))
