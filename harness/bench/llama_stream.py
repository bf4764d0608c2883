"""Timed generation with llama.cpp in this process (llama-cpp-python's low-level `generate`).

`generate` yields one token id per decoding step, so each token is stamped as it is produced.
llama.cpp in-process serves one sequence at a time: concurrent requests queue behind it.
`ignore_eos` masks the EOS logit, so a request always runs to its max_tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

from harness.bench.metrics import Timeline
from harness.core.errors import UsageError

DEFAULT_N_CTX = 4096


def resolve_gguf(target: str) -> Path:
    from harness.backends import embedded

    if target in ("embedded", embedded.EMBEDDED_ALIAS):
        return embedded.gguf_path()
    path = Path(target).expanduser()
    if not path.is_file():
        raise UsageError(f"no GGUF file at {path}")
    return path


class LlamaTokenizer:
    """The GGUF's own tokenizer, for prompts and token counts."""

    def __init__(self, llm: Any, name: str) -> None:
        self.llm = llm
        self.name = name

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def count(self, texts: list[str]) -> list[int]:
        return [len(self.encode(t)) for t in texts]

    def ordinary_ids(self) -> np.ndarray:
        special = {self.llm.token_bos(), self.llm.token_eos()}
        ids = [i for i in range(self.llm.n_vocab()) if i not in special and self.llm.detokenize([i], special=False)]
        return np.asarray(ids)


class GGUFRunner:
    name = "gguf"

    def __init__(self, target: str, args: dict[str, str], ignore_eos: bool) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise UsageError("gguf: models need llama-cpp-python: pip install 'harness[gguf]' "
                             "(build with CMAKE_ARGS=\"-DGGML_NATIVE=OFF\")") from None
        self.path = resolve_gguf(target)
        unknown = set(args) - {"n_ctx", "n_threads", "n_gpu_layers", "n_batch"}
        if unknown:
            raise UsageError(f"unknown --model-args for gguf: {', '.join(sorted(unknown))}")
        threads = int(args.get("n_threads", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
        self.settings = {"n_ctx": int(args.get("n_ctx", DEFAULT_N_CTX)), "n_threads": threads,
                         "n_gpu_layers": int(args.get("n_gpu_layers", 0)), "n_batch": int(args.get("n_batch", 512))}
        self.llm = llama_cpp.Llama(model_path=str(self.path), verbose=False, **self.settings)
        self.ignore_eos = ignore_eos
        self.eos = self.llm.token_eos()
        self.bos_prefix = [t for t in self.llm.tokenize(b"", add_bos=True) if t == self.llm.token_bos()]
        self._llama_cpp = llama_cpp

    def tokenizer(self) -> LlamaTokenizer:
        return LlamaTokenizer(self.llm, f"gguf:{self.path.name}")

    def _mask_eos(self, input_ids: Any, scores: Any) -> Any:
        scores[self.eos] = -np.inf
        return scores

    def run(self, jobs: list[Any]) -> list[Timeline]:
        return [self._one(job) for job in jobs]

    def _one(self, job: Any) -> Timeline:
        prompt = job.prompt
        ids = list(prompt.token_ids) if prompt.token_ids is not None else self.tokenizer().encode(prompt.text)
        tokens = self.bos_prefix + ids
        if len(tokens) + prompt.output_len > self.settings["n_ctx"]:
            return Timeline(index=job.index, send_ns=job.send_ns, end_ns=perf_counter_ns(), input_tokens=len(tokens),
                            error=f"prompt + max_tokens exceed n_ctx={self.settings['n_ctx']}", request_id=job.request_id)
        processors = self._llama_cpp.LogitsProcessorList([self._mask_eos]) if self.ignore_eos else None
        token_ns: list[int] = []
        end = perf_counter_ns()
        generator = self.llm.generate(tokens, temp=0.0, top_k=1, reset=True, logits_processor=processors)
        try:
            for token in generator:
                end = perf_counter_ns()
                if token == self.eos and not self.ignore_eos:
                    break
                token_ns.append(end)
                if len(token_ns) >= prompt.output_len:
                    break
        finally:
            generator.close()
        return Timeline(index=job.index, send_ns=job.send_ns, end_ns=end, token_ns=token_ns, input_tokens=len(tokens),
                        output_tokens=len(token_ns), token_source="engine", request_id=job.request_id)

    def describe(self) -> dict:
        from importlib import metadata

        return {"backend": "gguf", "path": str(self.path), **self.settings, "ignore_eos": self.ignore_eos,
                "llama_cpp_python": metadata.version("llama-cpp-python")}
