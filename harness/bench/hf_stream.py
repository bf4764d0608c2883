"""Timed static-batch generation with a transformers model (the hf backend's loaded model).

`generate` calls a streamer's `put` once with the prompt and then once per decoding step with
that step's token of every row, after the token is on the host; the streamer stamps each step.
A row's content tokens are its tokens up to (not including) EOS, or up to its own max_tokens;
its end is the step of its last token (or of its EOS).
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any

from harness.bench.metrics import Timeline


class _StepClock:
    """A transformers streamer that keeps (time, tokens of every row) per decoding step."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.steps: list[tuple[int, list[int]]] = []

    def put(self, value: Any) -> None:
        now = perf_counter_ns()
        if not self.prompt_seen:
            self.prompt_seen = True  # the first call carries the prompt ids
            return
        self.steps.append((now, value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


class HFRunner:
    name = "hf"

    def __init__(self, backend: Any, ignore_eos: bool) -> None:
        self.backend = backend
        self.ignore_eos = ignore_eos
        self.state = backend.load()
        self.on_cuda = self.state.model.device.type == "cuda"

    def tokenizer_source(self) -> str:
        return self.state.model_dir

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if prompt.token_ids is not None:
            return list(prompt.token_ids)
        tokenizer = self.state.tokenizer
        if prompt.messages and tokenizer.chat_template:
            text = tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
            return list(tokenizer.encode(text, add_special_tokens=False))
        return list(tokenizer.encode(prompt.text, add_special_tokens=False))

    def run(self, jobs: list[Any]) -> list[Timeline]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        from harness.backends.hf.generate import left_pad

        model, tokenizer = self.state.model, self.state.tokenizer
        prompts = [self._prompt_ids(j.prompt) for j in jobs]
        limits = [j.prompt.output_len for j in jobs]
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        ids, mask = left_pad(prompts, pad, model.device)
        width = ids.shape[1]

        class RowLimit(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = [input_ids.shape[1] - width >= n for n in limits]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        config = GenerationConfig(do_sample=False, max_new_tokens=max(limits), pad_token_id=pad, eos_token_id=eos,
                                  min_new_tokens=max(limits) if self.ignore_eos else None)
        clock = _StepClock()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                           stopping_criteria=StoppingCriteriaList([RowLimit()]), streamer=clock)
        return [self._timeline(j, row, len(p), clock.steps) for row, (j, p) in enumerate(zip(jobs, prompts))]

    def _timeline(self, job: Any, row: int, prompt_len: int, steps: list[tuple[int, list[int]]]) -> Timeline:
        eos = self.state.tokenizer.eos_token_id
        token_ns: list[int] = []
        end = steps[-1][0] if steps else perf_counter_ns()
        for ns, tokens in steps[: job.prompt.output_len]:
            if tokens[row] == eos and not self.ignore_eos:
                end = ns
                break
            token_ns.append(ns)
            end = ns
        return Timeline(index=job.index, send_ns=job.send_ns, end_ns=end, token_ns=token_ns, input_tokens=prompt_len,
                        output_tokens=len(token_ns), token_source="engine", request_id=job.request_id)

    def describe(self) -> dict:
        return self.backend.describe()
