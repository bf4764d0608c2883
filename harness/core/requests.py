"""The backend-neutral request types, the contract of lm-evaluation-harness.

A task turns each document into requests; a backend answers them in batches. Requests are
frozen values so that identical requests from different tasks deduplicate by hash.

`doc_key` is an opaque key of the document a request was built for (as lm-eval's
`Instance.metadata`): it is not part of the hash or of equality, so it never changes what is
cached or deduplicated. `replay:` uses it to find a document's recorded answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Union

from harness.core.hashing import sha256_json

RequestKind = Literal["loglikelihood", "loglikelihood_rolling", "generate"]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Loglikelihood:
    """log p(continuation | context), summed over the continuation's tokens."""

    context: str
    continuation: str
    kind: RequestKind = "loglikelihood"
    doc_key: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LoglikelihoodRolling:
    """log p(text) of a whole text, in rolling windows of the model's context length."""

    text: str
    kind: RequestKind = "loglikelihood_rolling"
    doc_key: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Generate:
    """Generation from a plain prompt or from chat messages (the backend applies the chat template)."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    temperature: float = 0.0
    n: int = 1
    seed: int | None = None
    kind: RequestKind = "generate"
    doc_key: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("Generate needs exactly one of prompt or messages")


Request = Union[Loglikelihood, LoglikelihoodRolling, Generate]


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool


# What a backend returns for each kind: LoglikelihoodResult, a float, or a list of n strings.
Response = Union[LoglikelihoodResult, float, list]


def request_hash(request: Request) -> str:
    """Hash of everything that determines the answer: kind, text and generation settings (not doc_key)."""
    fields = asdict(request)
    del fields["doc_key"]
    return sha256_json(fields)


def response_to_json(request: Request, response: Response) -> object:
    if isinstance(response, LoglikelihoodResult):
        return [response.logprob, response.is_greedy]
    return response


def response_from_json(request: Request, value: object) -> Response:
    if request.kind == "loglikelihood":
        assert isinstance(value, (list, tuple)), f"cached loglikelihood is not a pair: {value!r}"
        logprob, is_greedy = value
        return LoglikelihoodResult(float(logprob), bool(is_greedy))
    if request.kind == "loglikelihood_rolling":
        assert isinstance(value, (int, float)), f"cached rolling loglikelihood is not a number: {value!r}"
        return float(value)
    assert isinstance(value, (list, tuple)), f"cached generation is not a list: {value!r}"
    return list(value)
