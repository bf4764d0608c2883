"""The `hf` backend: a transformers causal LM in this process.

`hf:TARGET` where TARGET is the embedded alias `smollm2-135m-instruct`, a local checkpoint
directory, or a hub id. Construction validates the spec and imports neither torch nor
transformers; `fingerprint()` hashes files (memoised) or, for hub ids, the id and revision; the
weights load on the first request. Loglikelihoods follow lm-eval 0.4.13's HFLM token for token
(hf_tokens.py) and are computed with shared contexts (hf_packing.py); generation is in
hf_generate.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from itertools import chain
from pathlib import Path
from typing import Any

from harness.backends import embedded
from harness.backends.base import Backend, ModelSpec, Progress
from harness.backends.batching import loglikelihood_batches, timed
from harness.backends.hf.options import HFOptions, ModelSource, check_hub_model, parse_options, resolve_source
from harness.backends.tokens import TokenRequest, prefix_token_id, rolling_windows, tok_encode
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json, sha256_text
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling
from harness.store.fingerprint import dir_fingerprint, file_sha256

# lm-eval's fallback when neither the config nor the tokenizer names a context length.
DEFAULT_MAX_LENGTH = 2048
TOKENIZER_INFINITY = 1000000000000000019884624838656
# Padded tokens per forward pass when batch_size=auto. Measured on 2 CPU cores with
# SmolLM2-135M: 1024 was as fast as the best fixed batch size on short (HellaSwag) and long
# (5-shot MMLU) rows alike, where any fixed row count is too big for one or too small for the other.
CPU_TOKEN_BUDGET = 1024
GPU_TOKEN_BUDGET = 16384  # not measured here (no GPU); rows are short next to GPU memory
# Greedy prompts per generate() call when batch_size=auto: 16 GSM8K prompts x 64 new tokens took
# 7.0 s at 16 against 12.1 s one by one on 2 CPU cores, with identical answers.
GENERATE_AUTO_BATCH = 16


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_dir: str
    max_length: int
    prefix_id: int
    scorer: Any  # hf_packing.PackedScorer


class HFBackend(Backend):
    name = "hf"
    supports = Backend.supports | {"token_logprobs"}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.source: ModelSource = resolve_source(spec.target)
        self.options: HFOptions = parse_options(spec.args, self.source)
        # refused now, before any database is opened: no CUDA for device=cuda, a hub id that cannot be loaded
        if self.options.device.startswith("cuda"):
            import torch

            _resolve_device(self.options.device, torch)
        if self.source.kind == "hub":
            check_hub_model(self.source.target, self.options.revision)
        self._loaded: LoadedModel | None = None
        self._fingerprint: str | None = None
        self.share_contexts = True  # False scores every request in its own row (the reference layout)
        self.share_prefixes = True  # False runs every row in full (no KV cache of a shared prefix)
        self.forward_seconds = 0.0  # time inside model forward passes and generate calls

    # -- identity ----------------------------------------------------------------------------

    def weights_fingerprint(self) -> str:
        if self.source.kind == "embedded":
            return embedded.embedded_fingerprint()  # the GGUF's hash: no conversion needed
        if self.source.kind == "local" and self.source.adapter_base is not None:
            # an adapter answers as adapter + base: both sets of files decide it
            base = self.source.adapter_base
            base_fingerprint = (embedded.embedded_fingerprint() if base == embedded.EMBEDDED_ALIAS
                                else dir_fingerprint(base) if Path(base).is_dir()
                                else sha256_json({"hub": base, "revision": "main"}))
            return sha256_json({"adapter": dir_fingerprint(self.source.target), "base": base_fingerprint})
        if self.source.kind == "local":
            return dir_fingerprint(self.source.target)
        return sha256_json({"hub": self.source.target, "revision": self.options.revision})

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = sha256_json({"weights": self.weights_fingerprint(), **self.options.answer_changing()})
        return self._fingerprint

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def describe(self) -> dict:
        loaded = self._loaded
        model_dir = loaded.model_dir if loaded else self._model_dir()
        files = Path(model_dir) if self.source.kind != "hub" else _hub_snapshot(self.source.target, self.options.revision)
        tokenizer_json = files / "tokenizer.json" if files else None
        template = chat_template_text(loaded.tokenizer if loaded else None, files)
        return super().describe() | {
            "model_dir": str(files) if self.source.kind == "hub" and files else model_dir,
            "source": self.source.kind,
            "dtype": str(loaded.model.dtype).removeprefix("torch.") if loaded else self.options.dtype,
            "device": str(loaded.model.device) if loaded else self.options.device,
            "max_length": loaded.max_length if loaded else self.options.max_length,
            "batch_size": self.options.batch_size or "auto",
            "tokenizer_sha256": file_sha256(tokenizer_json) if tokenizer_json and tokenizer_json.is_file() else None,
            "chat_template_sha256": sha256_text(template) if template else None,
            "torch_version": _version("torch"),
            "transformers_version": _version("transformers"),
            "forward_seconds": round(self.forward_seconds, 3),
        }

    # -- loading -----------------------------------------------------------------------------

    def _model_dir(self) -> str:
        if self.source.kind == "embedded":
            return str(embedded.ensure_hf_dir())
        return self.source.target

    def load(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> LoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that counts requests

        from harness.backends.hf.packing import PackedScorer

        device = _resolve_device(self.options.device, torch)
        if device.type == "cpu":
            _limit_cpu_threads(torch)
        model_dir = self._model_dir()
        base = self.source.adapter_base  # a peft adapter: the weights are the base's, wrapped below
        weights_dir = (str(embedded.ensure_hf_dir()) if base == embedded.EMBEDDED_ALIAS else base) if base else model_dir
        tokenizer_dir = model_dir if not base or (Path(model_dir) / "tokenizer_config.json").is_file() else weights_dir
        common = {"revision": self.options.revision, "trust_remote_code": self.options.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, **common)
            dtype = self.options.dtype if self.options.dtype == "auto" else getattr(torch, self.options.dtype)
            model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype=dtype, **common)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot load hf model {self.spec.target}: {str(error).splitlines()[0]}") from error
        # Only the special ids survive from the checkpoint's generation_config: its sampling
        # defaults (temperature, top_p, ...) would otherwise leak into every unset field. Set on the
        # base before a peft wrap: attributes set on a PeftModel stay on the wrapper.
        old = model.generation_config
        model.generation_config = GenerationConfig(bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id,
                                                   pad_token_id=old.pad_token_id)
        if base:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, model_dir)
        model = model.to(device).eval()
        return LoadedModel(model, tokenizer, model_dir, self._max_length(model, tokenizer), prefix_token_id(tokenizer),
                           PackedScorer(model))

    def _max_length(self, model: Any, tokenizer: Any) -> int:
        """lm-eval's resolve_max_length: the argument, the config, the tokenizer, then 2048."""
        if self.options.max_length:
            return self.options.max_length
        config = model.config
        config = getattr(config, "text_config", None) or config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, attr, None)
            if value is not None:
                return int(value)
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH

    def close(self) -> None:
        if self._loaded is not None:
            on_gpu = self._loaded.model.device.type == "cuda"
            self._loaded = None
            import gc

            gc.collect()
            if on_gpu:
                import torch

                torch.cuda.empty_cache()  # hand the memory back for the next backend in this process

    # -- loglikelihood -----------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        if not requests:
            return  # nothing to do: do not load the model for it
        state = self.load()
        yield from loglikelihood_batches(requests, state.tokenizer, state.prefix_id, state.max_length, self._score, progress)

    def loglikelihood_rolling(self, requests: Sequence[LoglikelihoodRolling], progress: Progress) -> Iterator[tuple[int, float]]:
        if not requests:
            return  # nothing to do: do not load the model for it
        state = self.load()
        windows: dict[int, TokenRequest] = {}
        windows_of: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            tokens = tok_encode(state.tokenizer, request.text, state.prefix_id)
            for window in rolling_windows(tokens, state.prefix_id, state.max_length):
                windows_of.setdefault(i, []).append(len(windows))
                windows[len(windows)] = window
            if i not in windows_of:  # no tokens, no windows: log p = 0, lm-eval's empty sum
                yield i, 0.0
                progress(1)
        owner = {w: i for i, ids in windows_of.items() for w in ids}
        remaining = {i: len(ids) for i, ids in windows_of.items()}
        window_scores: dict[int, float] = {}
        for batch in self._score(windows):
            finished = 0
            for window_id, score in batch:
                window_scores[window_id] = score.logprob
                i = owner[window_id]
                remaining[i] -= 1
                if remaining[i] == 0:
                    # summed in window order, as lm-eval does
                    yield i, sum(window_scores.pop(w) for w in windows_of[i])
                    finished += 1
            if finished:
                progress(finished)

    def _score(self, requests: dict[int, TokenRequest]) -> Iterator[list[tuple[int, Any]]]:
        """Scores per forward batch as [(key, Score)], keys those of `requests`."""
        from harness.backends.hf.packing import batches, pack_rows
        from harness.backends.hf.prefix import prefix_batches, split_by_prefix
        from harness.backends.hf.prefix import score as score_batch

        state = self.load()
        keys = list(requests)
        rows = pack_rows([requests[k] for k in keys], state.max_length, self.share_contexts)
        budget = GPU_TOKEN_BUDGET if state.model.device.type == "cuda" else CPU_TOKEN_BUDGET
        families, alone = split_by_prefix(rows) if self.share_prefixes else ([], rows)
        planned = chain(prefix_batches(families, self.options.batch_size), batches(alone, self.options.batch_size, budget))
        for batch in planned:
            started = time.perf_counter()
            scores = score_batch(state.scorer, batch)
            self.forward_seconds += time.perf_counter() - started
            yield [(keys[score.index], score) for score in scores]

    # -- generation --------------------------------------------------------------------------

    def prompt_tokens(self, request: Generate) -> list[int]:
        """The prompt as the model sees it: the chat template for messages, else lm-eval's encoding;
        left-truncated so that max_tokens new tokens fit in max_length."""
        state = self.load()
        tokenizer = state.tokenizer
        if request.messages is not None:
            if not tokenizer.chat_template:
                raise UsageError(f"model {self.spec.target} has no chat template; chat requests need one")
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            tokens = list(tokenizer.encode(text, add_special_tokens=False))  # the template has them
        else:
            tokens = tok_encode(tokenizer, request.prompt or "", state.prefix_id)
        room = state.max_length - request.max_tokens
        if room <= 0:
            raise UsageError(f"max_tokens={request.max_tokens} leaves no room for a prompt within max_length={state.max_length}")
        return tokens[-room:]

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        from harness.backends.hf.generate import GenerationJob, SpecialIds, run_jobs

        if not requests:
            return  # nothing to do: do not load the model for it
        state = self.load()
        jobs = [GenerationJob(i, tuple(self.prompt_tokens(r)), tuple(r.stop), r.max_tokens, r.temperature, r.n, r.seed)
                for i, r in enumerate(requests)]
        eos = _eos_ids(state)
        pad = state.tokenizer.pad_token_id if state.tokenizer.pad_token_id is not None else eos[0]
        batch_size = self.options.batch_size or GENERATE_AUTO_BATCH
        results = run_jobs(state.model, state.tokenizer, jobs, SpecialIds(eos, pad), batch_size)
        for item in timed(results, self._count_forward):
            yield item
            progress(1)

    def _count_forward(self, seconds: float) -> None:
        self.forward_seconds += seconds

    # -- full next-token distributions (hf/logprobs.py) ---------------------------------------

    def token_logprobs(self, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, Any]]:
        from harness.backends.hf.logprobs import iter_logprobs

        if not windows:
            return  # nothing to do: do not load the model for it
        state = self.load()
        yield from timed(iter_logprobs(state.model, windows, state.max_length), self._count_forward)

    def encode_text(self, text: str) -> list[int]:
        return list(self.load().tokenizer.encode(text, add_special_tokens=False))

    def special_ids(self) -> dict:
        from harness.backends.hf.logprobs import tokenizer_special_ids

        state = self.load()
        config = getattr(state.model.config, "text_config", None) or state.model.config
        return tokenizer_special_ids(state.tokenizer, config.vocab_size)


def _eos_ids(state: LoadedModel) -> tuple[int, ...]:
    ids = [state.tokenizer.eos_token_id]
    configured = state.model.generation_config.eos_token_id
    ids += configured if isinstance(configured, list) else [configured]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def _resolve_device(name: str, torch: Any) -> Any:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={name} but torch sees no CUDA device")
    return torch.device(name)


def _limit_cpu_threads(torch: Any) -> None:
    # torch sizes its pool from the machine's cores; in a container limited to fewer CPUs that
    # oversubscribes them and every matmul slows down.
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() > allowed:
        torch.set_num_threads(allowed)


def _hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot of a hub model if it has been downloaded (no network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - describe() must not fail a finished run
        return None
    return Path(found).parent if isinstance(found, str) else None


def chat_template_text(tokenizer: Any, files: Path | None) -> str | None:
    if tokenizer is not None:
        template = tokenizer.chat_template
        return template if isinstance(template, str) or template is None else json.dumps(template, sort_keys=True)
    if files is None:
        return None
    if (files / "chat_template.jinja").is_file():
        return (files / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            template = json.loads((files / name).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if template:
            return template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
