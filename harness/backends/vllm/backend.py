"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) in this process; needs a GPU.

`vllm:TARGET` where TARGET is `embedded` (or `smollm2-135m-instruct`: the embedded model's
dequantised checkpoint, as the hf backend uses), a checkpoint directory, or a hub id. Construction
validates the spec and checks that vllm is installed without importing it; `fingerprint()` hashes
local weights (memoised) or names hub id and revision; the engine starts on the first request.

Loglikelihoods: the prompt is lm-eval's context + continuation tokens (hf_tokens.py, the same
rules as the hf backend), submitted as token ids with `prompt_logprobs=1`; the continuation's
positions are summed, and a continuation is greedy when each of its tokens is the top prompt
logprob. Generation submits every request at once so vLLM batches them continuously.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from harness.backends import embedded
from harness.backends.base import Backend, ModelSpec, Progress
from harness.backends.batching import loglikelihood_batches
from harness.backends.hf.options import ModelSource
from harness.backends.tokens import TokenRequest, prefix_token_id, rolling_windows, tok_encode
from harness.backends.vllm.options import (
    INSTALL_HINT,
    VLLMOptions,
    missing_library_error,
    parse_options,
    resolve_source,
    vllm_installed,
    weights_fingerprint,
)
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json, sha256_text
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling
from harness.store.fingerprint import file_sha256

# Loglikelihood requests per llm.generate call: large enough for vLLM to fill the GPU, small enough
# that the scheduler caches answers as they come (a killed run loses one chunk at most).
LOGLIKELIHOOD_CHUNK = 2048
# The prompt must leave one position for the token vLLM generates after it (max_tokens >= 1).
GENERATED_SLOT = 1


@dataclass
class LoadedEngine:
    llm: Any  # vllm.LLM
    tokenizer: Any  # the engine's transformers tokenizer
    max_length: int
    prefix_id: int


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float
    is_greedy: bool


def continuation_score(prompt_logprobs: Sequence[Any], tokens: Sequence[int], n_continuation: int) -> ContinuationScore:
    """Sum of the continuation's prompt logprobs; greedy when no other token scored higher.

    `prompt_logprobs[i]` maps token id -> Logprob (with `.logprob`) for prompt position i (None at
    position 0); with prompt_logprobs=1 it holds the top token and the prompt's own token.
    """
    total, greedy = 0.0, True
    for position in range(len(tokens) - n_continuation, len(tokens)):
        entries = prompt_logprobs[position]
        own = entries[tokens[position]].logprob
        total += own
        greedy = greedy and own >= max(entry.logprob for entry in entries.values())
    return ContinuationScore(float(total), greedy)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.source: ModelSource = resolve_source(spec.target)
        self.options: VLLMOptions = parse_options(spec.args, self.source)
        if not vllm_installed():
            raise missing_library_error()
        self._loaded: LoadedEngine | None = None
        self._fingerprint: str | None = None

    # -- identity ----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = sha256_json({"backend": self.name, "weights": weights_fingerprint(self.source, self.options.revision),
                                             **self.options.answer_changing()})
        return self._fingerprint

    def _model_dir(self) -> str:
        if self.source.kind == "embedded":
            return str(embedded.ensure_hf_dir())
        return self.source.target

    def describe(self) -> dict:
        from harness.backends.hf.backend import chat_template_text

        # the embedded checkpoint's path without converting it: a fully cached run never needs it
        files = embedded.hf_dir() if self.source.kind == "embedded" else Path(self.source.target) if self.source.kind == "local" else None
        tokenizer_json = files / "tokenizer.json" if files else None
        template = chat_template_text(self._loaded.tokenizer if self._loaded else None, files)
        return super().describe() | {
            "model_dir": str(files) if files else None,
            "source": self.source.kind,
            "revision": self.options.revision,
            "dtype": self.options.dtype,
            "max_model_len": self._loaded.max_length if self._loaded else self.options.max_model_len,
            "tensor_parallel_size": self.options.tensor_parallel_size,
            "gpu_memory_utilization": self.options.gpu_memory_utilization,
            "tokenizer_sha256": file_sha256(tokenizer_json) if tokenizer_json and tokenizer_json.is_file() else None,
            "chat_template_sha256": sha256_text(template) if template else None,
            "vllm_version": _version("vllm"),
        }

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> LoadedEngine:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> LoadedEngine:
        try:
            from vllm import LLM
        except ImportError as error:
            raise UsageError(f"vllm does not import ({str(error).splitlines()[0]}): {INSTALL_HINT}") from error
        options = self.options
        engine_args: dict[str, Any] = {
            "model": self._model_dir(), "dtype": options.dtype, "seed": options.seed,
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
        }
        if options.max_model_len is not None:
            engine_args["max_model_len"] = options.max_model_len
        if options.revision is not None:
            engine_args["revision"] = options.revision
        try:
            llm = LLM(**engine_args)
        except (ValueError, RuntimeError, OSError) as error:  # no GPU, bad checkpoint, too little memory
            raise UsageError(f"vLLM cannot start {self.spec.target}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from error
        tokenizer = llm.get_tokenizer()
        return LoadedEngine(llm, tokenizer, _max_model_len(llm, options.max_model_len), prefix_token_id(tokenizer))

    def close(self) -> None:
        if self._loaded is None:
            return
        self._loaded = None
        gc.collect()
        try:  # hand the GPU back for the next backend in this process
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # moved or gone in this vLLM version: the engine's own shutdown must do
            return
        cleanup_dist_env_and_memory()

    # -- loglikelihood -----------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        if not requests:
            return
        state = self.load()
        yield from loglikelihood_batches(requests, state.tokenizer, state.prefix_id, state.max_length - GENERATED_SLOT - 1,
                                         self._score_chunks, progress)

    def _score_chunks(self, pending: dict[int, TokenRequest]) -> Iterator[list[tuple[int, ContinuationScore]]]:
        """Scores LOGLIKELIHOOD_CHUNK requests per llm.generate call, as [(key, score)] per chunk."""
        keys = list(pending)
        for start in range(0, len(keys), LOGLIKELIHOOD_CHUNK):
            chunk = keys[start : start + LOGLIKELIHOOD_CHUNK]
            yield list(zip(chunk, self._score([pending[k] for k in chunk])))

    def loglikelihood_rolling(self, requests: Sequence[LoglikelihoodRolling], progress: Progress) -> Iterator[tuple[int, float]]:
        if not requests:
            return
        state = self.load()
        # every window's whole prompt (context + predicted tokens) must fit with the generated slot
        window_length = state.max_length - GENERATED_SLOT - 1
        windows: list[TokenRequest] = []
        owner: list[int] = []
        for i, request in enumerate(requests):
            for window in rolling_windows(tok_encode(state.tokenizer, request.text, state.prefix_id), state.prefix_id, window_length):
                windows.append(window)
                owner.append(i)
        totals = [0.0] * len(requests)  # a text without tokens has no windows: log p = 0
        for i, score in zip(owner, self._score(windows)):
            totals[i] += score.logprob
        for i, total in enumerate(totals):
            yield i, total
            progress(1)

    def _score(self, token_requests: Sequence[TokenRequest]) -> list[ContinuationScore]:
        if not token_requests:
            return []
        from vllm import SamplingParams

        state = self.load()
        prompts = [list(r.context) + list(r.continuation) for r in token_requests]
        # One generated token is the least vLLM accepts; the prompt's logprobs are the answer.
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outputs = state.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [continuation_score(out.prompt_logprobs, prompt, len(r.continuation))
                for out, prompt, r in zip(outputs, prompts, token_requests)]

    # -- generation --------------------------------------------------------------------------

    def prompt_tokens(self, request: Generate) -> list[int]:
        """The chat template for messages, else lm-eval's encoding; left-truncated so that
        max_tokens new tokens fit, as the hf backend does."""
        state = self.load()
        tokenizer = state.tokenizer
        if request.messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise UsageError(f"model {self.spec.target} has no chat template; chat requests need one")
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            tokens = list(tokenizer.encode(text, add_special_tokens=False))  # the template has them
        else:
            tokens = tok_encode(tokenizer, request.prompt or "", state.prefix_id) or [state.prefix_id]
        room = state.max_length - request.max_tokens
        if room <= 0:
            raise UsageError(f"max_tokens={request.max_tokens} leaves no room for a prompt within max_model_len={state.max_length}")
        return tokens[-room:]

    def sampling_params(self, request: Generate) -> Any:
        from vllm import SamplingParams

        greedy = request.temperature == 0
        return SamplingParams(
            # greedy decoding is deterministic: one sequence, copied n times (older vLLMs refuse n > 1 greedy)
            n=1 if greedy else request.n,
            temperature=request.temperature,
            top_p=1.0,  # plain temperature sampling, as the hf and gguf backends
            max_tokens=request.max_tokens,
            stop=[s for s in request.stop if s] or None,
            seed=None if greedy else (self.options.seed if request.seed is None else request.seed),
            skip_special_tokens=True,
        )

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        # imports torch, which vLLM has loaded already
        from harness.backends.hf.generate import cut_at_stops

        if not requests:
            return
        state = self.load()
        prompts = [{"prompt_token_ids": self.prompt_tokens(r)} for r in requests]
        params = [self.sampling_params(r) for r in requests]
        # all at once: vLLM's scheduler batches them continuously, which is where its speed is
        outputs = state.llm.generate(prompts, params, use_tqdm=False)
        for i, (request, out) in enumerate(zip(requests, outputs)):
            texts = [cut_at_stops(completion.text, request.stop) for completion in out.outputs]
            yield i, texts * request.n if request.temperature == 0 else texts
            progress(1)


def _max_model_len(llm: Any, configured: int | None) -> int:
    """The engine's context length; its config object moved between vLLM releases."""
    if configured is not None:
        return configured
    for path in (("llm_engine", "model_config"), ("llm_engine", "vllm_config", "model_config"), ("model_config",)):
        config: Any = llm
        try:
            for attribute in path:
                config = getattr(config, attribute)
            return int(config.max_model_len)
        except AttributeError:
            continue
    raise UsageError("cannot read max_model_len from this vLLM version; pass --model-args max_model_len=N")


def _version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None
