"""The backend contract and model-spec parsing.

A backend is constructed cheaply (no weights loaded) so that a run answered entirely from the
cache never pays for model start-up; `fingerprint()` must also be cheap (file hashes are
memoised by path, size and mtime). Weights load on the first call that needs them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.core.errors import UsageError
from harness.core.redact import redact_args, redact_pairs, strip_userinfo
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling

if TYPE_CHECKING:  # numpy stays out of a process that only reads the cache
    import numpy

# Each backend method yields (index into the input list, result) pairs as batches finish,
# so the scheduler can write them to the cache as they come (a killed run loses one batch at most).
Progress = Callable[[int], None]

_BACKENDS: dict[str, str] = {
    # prefix -> "module:Class", imported only when used (torch, vllm and llama.cpp are heavy or optional)
    "hf": "harness.backends.hf.backend:HFBackend",
    "gguf": "harness.backends.gguf.backend:GGUFBackend",
    "vllm": "harness.backends.vllm.backend:VLLMBackend",
    "replay": "harness.backends.replay:ReplayBackend",
    "openai": "harness.backends.openai.backend:OpenAIBackend",
    "artifact": "harness.backends.artifact:open_artifact",  # resolves to the hf or gguf backend
}


def register_backend(prefix: str, target: str) -> None:
    _BACKENDS[prefix] = target


def backend_target(prefix: str) -> str:
    if prefix not in _BACKENDS:
        raise UsageError(f"unknown backend prefix {prefix!r}: expected one of {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[prefix]


@dataclass(frozen=True)
class ModelSpec:
    prefix: str  # hf, vllm, gguf, openai, ...
    target: str  # path, hub id, or MODEL@BASE_URL
    args: dict[str, str]

    @property
    def text(self) -> str:
        """The spec as it may be shown and stored: credentials in a URL are replaced by a marker."""
        return strip_userinfo(f"{self.prefix}:{self.target}")


def parse_model_args(text: str | None) -> dict[str, str]:
    """`key=value,key=value` -> dict; anything else is a UsageError."""
    if not text:
        return {}
    args: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"malformed --model-args {redact_pairs(text)!r}: expected key=value[,key=value...]")
        if key.strip() in args:
            raise UsageError(f"--model-args names {key.strip()} twice: give each key once")
        args[key.strip()] = value.strip()
    return args


def parse_model_spec(spec: str, model_args: str | None = None) -> ModelSpec:
    prefix, sep, target = spec.partition(":")
    if not sep or not target:
        raise UsageError(f"malformed model spec {strip_userinfo(spec)!r}: expected PREFIX:TARGET, e.g. hf:PATH_OR_ID")
    backend_target(prefix)  # unknown prefix -> UsageError
    return ModelSpec(prefix=prefix, target=target, args=parse_model_args(model_args))


class Backend(ABC):
    """Answers requests. Subclasses take (spec) and validate it in __init__ without loading weights."""

    name: str = "base"
    supports: frozenset[str] = frozenset({"loglikelihood", "loglikelihood_rolling", "generate"})

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abstractmethod
    def fingerprint(self) -> str:
        """Identity of the model and of every argument that changes its answers (cache key)."""

    def load(self) -> object:
        """Load the weights now rather than at the first request (a Ray replica calls it at start, so a bad
        file fails there, before the run is stored); backends that hold no weights here return None."""
        return None

    def check(self, kinds: set[str]) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Called before a run with the request kinds it needs; raise UsageError to refuse (may ask a server)."""

    def describe(self) -> dict:
        """Reproducibility metadata: tokenizer and chat-template hashes, dtype, device, arguments."""
        return {"backend": self.name, "spec": self.spec.text, "args": redact_args(self.spec.args)}

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        raise UsageError(f"backend {self.name} cannot compute loglikelihood requests")

    def loglikelihood_rolling(self, requests: Sequence[LoglikelihoodRolling], progress: Progress) -> Iterator[tuple[int, float]]:
        raise UsageError(f"backend {self.name} cannot compute loglikelihood_rolling requests")

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        raise UsageError(f"backend {self.name} cannot compute generate requests")

    # -- full next-token distributions (beyond lm-eval's request types): distribution fidelity
    # of a child checkpoint against its parent needs every row, not the log p of one continuation.

    def token_logprobs(self, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, numpy.ndarray]]:
        """For each window of token ids, (its index, float32 [len(window), vocab]) whose row t is
        log p(. | window[:t+1]), the log-softmax of the logits taken in float32 or better; yielded as
        each window finishes. A window longer than the model's context is a UsageError."""
        raise UsageError(f"backend {self.name} cannot compute full next-token log-probabilities")

    def encode_text(self, text: str) -> list[int]:
        """The text in the model's tokenizer, no special tokens added."""
        raise UsageError(f"backend {self.name} does not expose its tokenizer")

    def special_ids(self) -> dict:
        """At least "bos" (an id or None), "add_bos" (whether the tokenizer prepends it) and
        "vocab_size" (the width of a token_logprobs row)."""
        raise UsageError(f"backend {self.name} does not expose its tokenizer")

    def close(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Free the model (tests build several backends in one process)."""


def make_backend(spec: ModelSpec) -> Backend:
    module_name, _, class_name = backend_target(spec.prefix).partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec)
