"""The loop the in-process backends share: answer requests batch by batch, reporting progress.

`loglikelihood_batches` is the loglikelihood method of the hf, gguf and vllm backends less what
differs between them (the tokenizer, the context limit, how pending requests are batched and
scored); `timed` counts the time spent producing each item of an iterator (the model's work, not
the consumer's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from harness.backends.base import Progress
from harness.backends.tokens import TokenRequest, encode_pair, truncate
from harness.core.errors import UsageError
from harness.core.requests import Loglikelihood, LoglikelihoodResult

Item = TypeVar("Item")


class Scored(Protocol):
    """A continuation's score, as every backend's scorer returns it."""

    @property
    def logprob(self) -> float: ...

    @property
    def is_greedy(self) -> bool: ...


def loglikelihood_batches(
    requests: Sequence[Loglikelihood],
    tokenizer: Any,
    prefix_id: int,
    max_length: int,
    score: Callable[[dict[int, TokenRequest]], Iterable[Sequence[tuple[int, Scored]]]],
    progress: Progress,
) -> Iterator[tuple[int, LoglikelihoodResult]]:
    """Yields (index into `requests`, result) as batches finish, calling progress(len(batch)) after each.

    Each request is tokenised as lm-eval does (`encode_pair` with the model's prefix token); an
    empty continuation is answered at once (probability one: lm-eval asserts here) and reported by
    itself. The others are cut to `max_length` tokens (`truncate`; one that cannot fit is a
    UsageError naming the request), and `score` gets them all, keyed by index, and yields batches
    of (index, score).
    """
    pending: dict[int, TokenRequest] = {}
    for i, request in enumerate(requests):
        context, continuation = encode_pair(tokenizer, request.context, request.continuation, prefix_id)
        if not continuation:
            yield i, LoglikelihoodResult(0.0, True)
            progress(1)
            continue
        try:
            pending[i] = truncate(context, continuation, max_length)
        except ValueError as error:
            raise UsageError(f"loglikelihood request {i}: {error}") from error
    for batch in score(pending):
        for index, scored in batch:
            yield index, LoglikelihoodResult(scored.logprob, scored.is_greedy)
        progress(len(batch))


def timed(items: Iterator[Item], record: Callable[[float], None]) -> Iterator[Item]:
    """The items of `items` (up to the first None: none of the backends yields one), passing
    record() the seconds spent producing each one and finding the end."""
    while True:
        started = time.perf_counter()
        item = next(items, None)
        record(time.perf_counter() - started)
        if item is None:
            return
        yield item
