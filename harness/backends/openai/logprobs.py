"""Reading prompt logprobs out of an echoed `/v1/completions` answer (legacy OpenAI format).

With `echo=true, logprobs=k` the server returns, per prompt token, its text (`tokens`), where it
starts in the prompt (`text_offset`), log p(token_i | tokens < i) (`token_logprobs`, null for the
first token, which nothing predicts) and the k most likely tokens at that position
(`top_logprobs`). We ask for `max_tokens=1` and drop the generated token (it starts at
len(prompt)): llama-cpp-python reads max_tokens <= 0 as "until the context is full", some vLLM
versions refuse 0, and lm-eval's `local-completions` sends 1 as well.

The continuation is the tokens that start at or after the context's end (lm-eval's
`openai_completions` rule). As in lm-eval's `_encode_pair`, trailing whitespace of the context
belongs to the continuation ("is " + "four" scores " four"), so the hf backend and this one split
"context + continuation" at the same character. A token straddling that character counts as
context; where the hf backend's token split puts it differently, the two can differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from harness.backends.openai.http import MalformedResponse
from harness.core.requests import LoglikelihoodResult


@dataclass(frozen=True)
class EchoedToken:
    text: str
    start: int  # character offset in the prompt we sent
    logprob: float | None
    top: dict[str, float] | None


def first_choice(body: Any) -> dict:
    choices = body["choices"]
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("no choices")
    return min(choices, key=lambda c: c.get("index", 0))


def _offsets(logprobs: dict, tokens: list[str]) -> list[int]:
    offsets = logprobs.get("text_offset")
    if offsets is None:  # the legacy API defines them as running sums of the token texts
        return [0, *accumulate(len(t) for t in tokens)][: len(tokens)]
    return [int(o) for o in offsets]


def parse_echo(body: Any, prompt: str) -> list[EchoedToken]:
    """The echoed tokens of the prompt (and any generated one after it), offsets relative to `prompt`."""
    logprobs = first_choice(body).get("logprobs")
    if not isinstance(logprobs, dict):
        raise MalformedResponse("the answer carries no logprobs")
    tokens = [str(t) for t in logprobs["tokens"]]
    token_logprobs = logprobs["token_logprobs"]
    top = logprobs.get("top_logprobs") or [None] * len(tokens)
    offsets = _offsets(logprobs, tokens)
    if not (len(tokens) == len(token_logprobs) == len(top) == len(offsets)):
        raise MalformedResponse("tokens, token_logprobs, top_logprobs and text_offset differ in length")
    # vLLM echoes a BOS it prepended as text ("<s>") and counts it in text_offset; shift it out.
    shift = len(tokens[0]) if tokens and offsets[0] == 0 and tokens[0] and not prompt.startswith(tokens[0]) else 0
    return [EchoedToken(t, o - shift, None if lp is None else float(lp), tp)
            for t, o, lp, tp in zip(tokens, offsets, token_logprobs, top)]


def context_boundary(context: str) -> int:
    """Where the continuation starts in context + continuation: before the context's trailing spaces."""
    return len(context.rstrip()) if context[-1:].isspace() else len(context)


def _is_greedy(token: EchoedToken) -> bool:
    if token.logprob is None:
        return True  # nothing predicted it: no evidence either way
    if not token.top:
        return False
    return token.logprob >= max(token.top.values())


def continuation_result(tokens: list[EchoedToken], context: str, continuation: str) -> LoglikelihoodResult:
    """log p(continuation | context): the tokens starting in [boundary, len(prompt))."""
    end = len(context) + len(continuation)
    boundary = context_boundary(context)
    chosen = [t for t in tokens if boundary <= t.start < end]
    # The first prompt token has no logprob; with an empty context the continuation's first token
    # is that token (the hf backend conditions it on BOS instead: a known difference).
    scored = [t for t in chosen if t.logprob is not None]
    return LoglikelihoodResult(sum(t.logprob for t in scored), all(_is_greedy(t) for t in scored))  # type: ignore[misc]


def rolling_logprob(tokens: list[EchoedToken], text: str) -> float:
    """log p(text): every prompt token that has a logprob (the first has none)."""
    return sum(t.logprob for t in tokens if t.start < len(text) and t.logprob is not None)


def generated_token(body: Any) -> tuple[str, float]:
    """The one greedy token of a max_tokens=1, logprobs=1 completion, and its logprob."""
    logprobs = first_choice(body).get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        raise MalformedResponse("the completion carries no token logprobs")
    value = logprobs["token_logprobs"][0]
    if value is None:
        raise MalformedResponse("the generated token has a null logprob")
    return str(logprobs["tokens"][0]), float(value)
