"""The backend-neutral request types, the contract of lm-evaluation-harness.

A task turns each document into requests; a backend answers them in batches. Requests are
frozen values so that identical requests from different tasks deduplicate by hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Union

from harness.hashing import sha256_json

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


@dataclass(frozen=True)
class LoglikelihoodRolling:
    """log p(text) of a whole text, in rolling windows of the model's context length."""

    text: str
    kind: RequestKind = "loglikelihood_rolling"


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
    """Hash of everything that determines the answer: kind, text and generation settings."""
    return sha256_json(asdict(request))


def response_to_json(request: Request, response: Response) -> object:
    if isinstance(response, LoglikelihoodResult):
        return [response.logprob, response.is_greedy]
    return response


def response_from_json(request: Request, value: object) -> Response:
    if request.kind == "loglikelihood":
        logprob, is_greedy = value  # type: ignore[misc]
        return LoglikelihoodResult(float(logprob), bool(is_greedy))
    if request.kind == "loglikelihood_rolling":
        return float(value)  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]
