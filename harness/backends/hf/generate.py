"""Generation for the hf backend: batched greedy decoding, seeded sampling, stop strings.

Follows lm-eval's generate_until where it matters for scores: left padding, prompts left-truncated
to leave room for the new tokens, a stopping criterion on the decoded text, and the output cut at
the first stop string. Two deliberate choices:

- Sampling is plain temperature sampling over the whole vocabulary (top_k and top_p off, and the
  checkpoint's generation_config sampling defaults ignored), as `temperature` means in the OpenAI
  API and vLLM, so the backends agree on what a request asks for.
- A sampled request runs in its own `generate` call under its own seed (default 0), so its
  samples do not depend on which other requests happened to share a batch (the cache stores
  answers per request).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

DEFAULT_SEED = 0


@dataclass(frozen=True)
class GenerationJob:
    index: int  # position of the request in the caller's list
    prompt: tuple[int, ...]  # already truncated to leave room for max_tokens
    stop: tuple[str, ...]
    max_tokens: int
    temperature: float
    n: int
    seed: int | None


@dataclass(frozen=True)
class SpecialIds:
    eos: tuple[int, ...]  # any of these ends a sequence
    pad: int


class StopCriteria(StoppingCriteria):
    """Per-row stop: a stop string in the recently generated text, or the row's own max_tokens.

    Like lm-eval, only the last few tokens are decoded (the stop string's length in tokens plus
    two, because a model may spell a stop string with different tokens than the tokenizer would).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[tuple[str, ...]], max_tokens: Sequence[int], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [tuple(s for s in row if s) for row in stops]
        self.max_tokens = list(max_tokens)
        self.prompt_width = prompt_width
        self.lookback = [max((len(tokenizer.encode(s, add_special_tokens=False)) for s in row), default=0) + 2 for row in self.stops]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_width :]
        done = []
        for row, stops in enumerate(self.stops):
            finished = generated.shape[1] >= self.max_tokens[row]
            if not finished and stops:
                tail = self.tokenizer.decode(generated[row, -self.lookback[row] :].tolist())
                finished = any(stop in tail for stop in stops)
            done.append(finished)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """lm-eval's postprocessing: keep the text before the earliest stop string."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def decode_row(tokenizer: Any, tokens: list[int], job: GenerationJob, special: SpecialIds) -> str:
    tokens = tokens[: job.max_tokens]
    for position, token in enumerate(tokens):
        if token in special.eos:  # EOS always ends the answer; what follows is padding
            tokens = tokens[:position]
            break
    return cut_at_stops(tokenizer.decode(tokens, skip_special_tokens=True), job.stop)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _config(max_new_tokens: int, special: SpecialIds, temperature: float, n: int) -> GenerationConfig:
    common = {"max_new_tokens": max_new_tokens, "eos_token_id": list(special.eos), "pad_token_id": special.pad,
              "num_return_sequences": n}
    if temperature == 0:
        return GenerationConfig(do_sample=False, **common)
    # top_k=0 explicitly: transformers' global default is 50. The checkpoint's own sampling
    # defaults are cleared when the model is loaded (see hf.py), as unset fields inherit them.
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, **common)


def _generate(model: Any, tokenizer: Any, jobs: Sequence[GenerationJob], special: SpecialIds, temperature: float, n: int) -> list[list[str]]:
    ids, mask = left_pad([job.prompt for job in jobs], special.pad, model.device)
    stops = [job.stop for job in jobs for _ in range(n)]
    max_tokens = [job.max_tokens for job in jobs for _ in range(n)]
    criteria = StoppingCriteriaList([StopCriteria(tokenizer, stops, max_tokens, ids.shape[1])])
    config = _config(max(max_tokens), special, temperature, n)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, stopping_criteria=criteria)
    generated = out[:, ids.shape[1] :].tolist()
    return [[decode_row(tokenizer, generated[j * n + k], job, special) for k in range(n)] for j, job in enumerate(jobs)]


def _sampled(model: Any, tokenizer: Any, job: GenerationJob, special: SpecialIds) -> list[str]:
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # leave the caller's RNG state untouched
        torch.manual_seed(DEFAULT_SEED if job.seed is None else job.seed)
        return _generate(model, tokenizer, [job], special, job.temperature, job.n)[0]


def run_jobs(model: Any, tokenizer: Any, jobs: Sequence[GenerationJob], special: SpecialIds, batch_size: int) -> Iterator[tuple[int, list[str]]]:
    """Greedy jobs in batches (longest prompt first), each sampled job on its own; yields as they finish."""
    greedy = sorted((j for j in jobs if j.temperature == 0), key=lambda j: -len(j.prompt))
    for start in range(0, len(greedy), batch_size):
        batch = greedy[start : start + batch_size]
        for job, texts in zip(batch, _generate(model, tokenizer, batch, special, 0.0, 1)):
            # greedy decoding is deterministic: n copies of the one answer
            yield job.index, texts * job.n
    for job in (j for j in jobs if j.temperature != 0):
        yield job.index, _sampled(model, tokenizer, job, special)
