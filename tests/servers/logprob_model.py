"""The model side of logprob_server: prompt logprobs and generation over the `hf` backend's model.

Tokenisation is the hf backend's (`tok_encode`, the chat template through `prompt_tokens`), and the
log-softmax is taken in float32 like hf_packing's, so `openai:` over this server reproduces
`hf:` to float noise wherever both split context and continuation at the same token.

Token i's prompt logprob is log p(token_i | tokens < i); the first is null. With `echo_bug` it is
log p(token_i | tokens <= i), the off-by-one of llama-cpp-python's echo, for testing the probe.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.backends.base import ModelSpec
from harness.backends.hf.backend import HFBackend
from harness.backends.tokens import tok_encode
from harness.core.requests import Generate, Message

MAX_TOP_K = 20  # top_logprobs kept per prompt position: vLLM's default max_logprobs


class BadRequest(ValueError):
    """The request cannot be served (too long, bad parameter): HTTP 400."""


@dataclass(frozen=True)
class TokenLogprob:
    text: str
    logprob: float | None
    top: dict[str, float] | None


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 16
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs wanted


@dataclass
class Prefill:
    """A prompt after its forward pass: what echo, logprobs and generation need from it."""

    ids: list[int]
    cache: Any  # the KV cache over ids (transformers DynamicCache)
    chosen: torch.Tensor  # [n] log p(ids[i] | ids[:i]); nan at 0
    same: torch.Tensor  # [n] log p(ids[i] | ids[:i+1]): the --echo-bug value
    top_values: torch.Tensor  # [n, MAX_TOP_K] the most likely next tokens after ids[:i+1]
    top_ids: torch.Tensor
    last: torch.Tensor  # [vocab] the next-token distribution after the whole prompt


@dataclass
class Choice:
    text: str  # generated text, cut before any stop string
    tokens: list[TokenLogprob] = field(default_factory=list)  # generated tokens (logprobs when asked)
    finish_reason: str = "length"


def token_pieces(tokenizer: Any, text: str, ids: list[int], add_special: bool) -> list[str]:
    """Each token's share of `text`; the pieces concatenate to `text` exactly (zero-length for an
    added BOS), so running sums of their lengths are the legacy `text_offset`."""
    try:
        encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"] if list(encoded["input_ids"]) == ids else None
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        offsets = None
    if offsets is None:
        decoded = [tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
        return [decoded[i + 1][len(decoded[i]):] for i in range(len(ids))]
    starts: list[int] = []
    for i, (start, _) in enumerate(offsets):
        starts.append(0 if i == 0 else max(start, starts[-1]))  # monotonic: split characters share a start
    ends = starts[1:] + [len(text)]
    return [text[s:e] for s, e in zip(starts, ends)]


class LogprobModel:
    def __init__(self, model: str, echo_bug: bool = False) -> None:
        self.backend = HFBackend(ModelSpec("hf", model, {}))
        self.state = self.backend.load()
        self.echo_bug = echo_bug
        self.lock = threading.Lock()  # one forward pass at a time: the model and the prefix cache are shared
        self._last: Prefill | None = None  # the previous prompt, for prefix reuse
        eos = {self.state.tokenizer.eos_token_id, *(_as_list(self.state.model.generation_config.eos_token_id))}
        self.eos_ids = {int(i) for i in eos if i is not None}

    @property
    def max_length(self) -> int:
        return self.state.max_length

    def fingerprint(self) -> str:
        return self.backend.fingerprint()

    # -- prompts -------------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        return tok_encode(self.state.tokenizer, prompt, self.state.prefix_id)

    def prompt_pieces(self, prompt: str, ids: list[int]) -> list[str]:
        tokenizer = self.state.tokenizer
        add_special = not prompt.startswith(tokenizer.decode(self.state.prefix_id))  # tok_encode's rule
        return token_pieces(tokenizer, prompt, ids, add_special)

    def chat_ids(self, messages: Sequence[dict], max_tokens: int) -> list[int]:
        request = Generate(messages=tuple(Message(str(m["role"]), str(m.get("content") or "")) for m in messages),
                           max_tokens=max(max_tokens, 1))
        return self.backend.prompt_tokens(request)

    def decode(self, ids: Sequence[int]) -> str:
        return self.state.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- compute -------------------------------------------------------------------------------

    def _check_length(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt == 0:
            raise BadRequest("the prompt is empty")
        if n_prompt + max_tokens > self.max_length:
            raise BadRequest(f"This model's maximum context length is {self.max_length} tokens; the prompt has "
                             f"{n_prompt} and max_tokens is {max_tokens}")

    def _top(self, values: torch.Tensor, ids: torch.Tensor, k: int, token: int, token_logprob: float) -> dict[str, float]:
        decode = self.state.tokenizer.decode
        top = {decode([int(i)]): float(v) for v, i in zip(values[:k], ids[:k])}
        top[decode([token])] = token_logprob
        return top

    def prompt_logprobs(self, prefill: Prefill, pieces: list[str], top_k: int) -> list[TokenLogprob]:
        out = [TokenLogprob(pieces[0], None, None)]
        for i in range(1, len(prefill.ids)):
            row = i if self.echo_bug else i - 1  # which position's distribution scores token i
            value = float(prefill.same[i] if self.echo_bug else prefill.chosen[i])
            top = self._top(prefill.top_values[row], prefill.top_ids[row], top_k, prefill.ids[i], value)
            out.append(TokenLogprob(pieces[i], value, top))
        return out

    def _prefill(self, ids: list[int]) -> Prefill:
        """The prompt's per-position logprobs and KV cache, reusing the previous prompt's common prefix.

        Like vLLM's and llama.cpp's prefix caching: the choices of one multiple-choice question and
        the few-shot examples shared by a task's prompts are computed once. Position p - 1 of a
        shared prefix of length p is recomputed, because its stored logprob is of the old next token.
        """
        old, self._last = self._last, None  # its cache becomes this prompt's; stored again when all went well
        shared = _common_prefix(old.ids, ids) if old is not None else 0
        keep = max(shared - 1, 0)
        if old is not None and keep > 0:
            cache = old.cache
            cache.crop(-(cache.get_seq_length() - keep))  # negative: tokens to remove (transformers 4 and 5)
        else:
            cache = None
        out = self.state.model(input_ids=torch.tensor([ids[keep:]]), past_key_values=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)  # rows keep .. n-1, float32 like hf_packing
        positions = torch.arange(len(ids) - keep)
        new_ids = torch.tensor(ids[keep:])
        chosen = torch.full((len(ids),), float("nan"))
        chosen[keep + 1:] = logp[positions[:-1], new_ids[1:]]
        same = logp[positions, new_ids]
        top_values, top_ids = torch.topk(logp, min(MAX_TOP_K, logp.shape[-1]), dim=-1)
        if old is not None and keep > 0:
            chosen[1: keep + 1] = old.chosen[1: keep + 1]
            same = torch.cat([old.same[:keep], same])
            top_values, top_ids = torch.cat([old.top_values[:keep], top_values]), torch.cat([old.top_ids[:keep], top_ids])
        return Prefill(list(ids), out.past_key_values, chosen, same, top_values, top_ids, logp[-1].clone())

    def run(self, ids: list[int], sampling: Sampling, n: int,
            on_text: Callable[[int, str], None] | None = None) -> tuple[Prefill, list[Choice]]:
        """The prompt's logprobs and n generated choices, under the model lock."""
        self._check_length(len(ids), sampling.max_tokens)
        with self.lock, torch.inference_mode():
            prefill = self._prefill(ids)
            choices = []
            for j in range(n):
                last = j == n - 1
                cache = prefill.cache if last else copy.deepcopy(prefill.cache)
                choices.append(self._generate(cache, prefill.last, sampling, j, on_text))
            # generation grew the cache past the prompt: cut it back so the next prompt can share it
            extra = prefill.cache.get_seq_length() - len(ids)
            if extra > 0:
                prefill.cache.crop(-extra)
            self._last = prefill
        return prefill, choices

    def _generate(self, past: Any, first: torch.Tensor, sampling: Sampling, index: int,
                  on_text: Callable[[int, str], None] | None) -> Choice:
        generator = None
        if sampling.temperature > 0:
            generator = torch.Generator().manual_seed((sampling.seed if sampling.seed is not None else torch.seed()) + index)
        next_logp = first
        ids: list[int] = []
        choice, emitted, text = Choice(""), 0, ""
        holdback = max((len(s) for s in sampling.stop), default=1) - 1  # a stop string may be arriving
        for step in range(sampling.max_tokens):
            if step > 0:  # the prefill already gave the first token's distribution
                out = self.state.model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=past, use_cache=True)
                past, next_logp = out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            token = _pick(next_logp, sampling.temperature, generator)
            if token in self.eos_ids:
                choice.finish_reason = "stop"
                break
            ids.append(token)
            previous, text = text, self.decode(ids)
            top = None
            if sampling.top_logprobs is not None:
                values, top_ids = torch.topk(next_logp, sampling.top_logprobs)
                top = self._top(values, top_ids, sampling.top_logprobs, token, float(next_logp[token]))
            choice.tokens.append(TokenLogprob(text[len(previous):], float(next_logp[token]), top))
            cut = [text.index(s) for s in sampling.stop if s and s in text]
            if cut:
                text, choice.finish_reason = text[: min(cut)], "stop"
                break
            if on_text and len(text) - holdback > emitted:
                on_text(index, text[emitted: len(text) - holdback])
                emitted = len(text) - holdback
        if on_text and len(text) > emitted:
            on_text(index, text[emitted:])
        choice.text = text
        return choice


def _pick(logp: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0 or generator is None:
        return int(torch.argmax(logp))
    probs = torch.softmax(logp / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
