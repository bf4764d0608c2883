"""Timed generation with vLLM's async engine in this process (continuous batching).

Each RequestOutput the engine yields carries the request's tokens so far; the new ones are
stamped when it is yielded. vLLM is imported only here, when a vllm: spec is benchmarked.
"""

from __future__ import annotations

import itertools
from time import perf_counter_ns
from typing import Any

from harness.bench.datasets import BenchPrompt
from harness.bench.metrics import Timeline
from harness.core.errors import UsageError
from harness.core.redact import redact_args

ENGINE_ARGS = {"dtype": str, "max_model_len": int, "gpu_memory_utilization": float, "tensor_parallel_size": int,
               "max_num_seqs": int, "enforce_eager": lambda v: v.lower() in ("1", "true", "yes"), "revision": str,
               "quantization": str, "seed": int}


class VLLMEngine:
    def __init__(self, target: str, args: dict[str, str], ignore_eos: bool) -> None:
        try:
            import vllm
        except ImportError:
            raise UsageError("vllm: models need vLLM and a GPU: pip install 'harness[vllm]'") from None
        unknown = set(args) - set(ENGINE_ARGS)
        if unknown:
            raise UsageError(f"unknown --model-args for vllm: {', '.join(sorted(unknown))}")
        engine_args = {k: ENGINE_ARGS[k](v) for k, v in args.items()}
        self.vllm = vllm
        self.target, self.engine_args, self.ignore_eos = target, engine_args, ignore_eos
        self.engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=target, **engine_args))
        self._ids = itertools.count()

    async def stream(self, prompt: BenchPrompt, index: int, request_id: str) -> Timeline:
        params = self.vllm.SamplingParams(max_tokens=prompt.output_len, temperature=0.0, ignore_eos=self.ignore_eos)
        inputs: Any = {"prompt_token_ids": list(prompt.token_ids)} if prompt.token_ids is not None else prompt.text
        token_ns: list[int] = []
        seen, input_tokens = 0, prompt.input_len
        send_ns = perf_counter_ns()
        try:
            async for output in self.engine.generate(inputs, params, f"{request_id}-{next(self._ids)}"):
                now = perf_counter_ns()
                n = len(output.outputs[0].token_ids)
                token_ns.extend([now] * (n - seen))
                seen = n
                if output.prompt_token_ids is not None:
                    input_tokens = len(output.prompt_token_ids)
        except Exception as exc:  # noqa: BLE001 - an engine error fails this request, not the run
            return Timeline(index=index, send_ns=send_ns, end_ns=perf_counter_ns(), token_ns=token_ns,
                            input_tokens=input_tokens, error=f"{type(exc).__name__}: {exc}"[:200], request_id=request_id)
        return Timeline(index=index, send_ns=send_ns, end_ns=perf_counter_ns(), token_ns=token_ns, input_tokens=input_tokens,
                        output_tokens=seen, token_source="engine", request_id=request_id)

    def reset_peak_memory(self) -> None:
        pass  # vLLM preallocates its KV cache: what is in use is the peak

    def peak_memory_mb(self) -> float | None:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20

    def describe(self) -> dict:
        return {"backend": "vllm", "model": self.target, "engine_args": redact_args(self.engine_args), "ignore_eos": self.ignore_eos,
                "vllm_version": getattr(self.vllm, "__version__", None)}

    async def aclose(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
