"""Does this server's echoed prompt logprob mean log p(token_i | tokens < i)? Ask it.

The probe generates one token greedily after a fixed prompt with logprobs=1 (a decode step, which
every server gets right because sampling depends on it), then echoes prompt + that token and
reads the prompt logprob of the same token. Both must be log p(token | prompt). A server that is
off by one (llama-cpp-python's server reports log p(token_i | tokens <= i)) answers with a number
several nats away; a chat-only endpoint has no /completions at all; transformers serve accepts
`logprobs` and `echo` but ignores them (its completions carry no logprobs block). Each way
loglikelihood tasks are refused before anything runs, instead of being scored with wrong numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.backends.openai.http import ApiError, AsyncApi
from harness.backends.openai.logprobs import first_choice, generated_token, parse_echo

PROBE_PROMPT = "The capital of France is"
# Greedy decode and echoed prefill compute the same logprob along different kernels (one query row
# with a KV cache against the full causal pass). In float32 they agree to ~1e-5; fp16/bf16 servers
# differ by up to a few hundredths. An off-by-one server is whole nats away (-8.45 against -0.26
# for " Paris" on SmolLM2), so 0.05 refuses it with room to spare and accepts half precision.
PROBE_ABS_TOL = 0.05
# Answers that mean "no such endpoint or no such option here", not "try again".
NO_COMPLETIONS = {400, 404, 405, 422, 501}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str  # one line, shown when loglikelihood tasks are refused
    token: str | None = None
    generated_logprob: float | None = None
    echoed_logprob: float | None = None
    # Whether probe=off could help: not where the server has no prompt logprobs to trust at all.
    skippable: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _completions_failure(error: ApiError) -> ProbeResult:
    if error.status in NO_COMPLETIONS:
        return ProbeResult(False, f"the server has no usable /completions with logprobs ({error}); "
                                  "chat endpoints give no prompt logprobs", skippable=False)
    return ProbeResult(False, f"the prompt-logprob probe failed: {error}")


def _generated_or_none(body: Any) -> tuple[str, float] | None:
    """None for a well-formed answer without a logprobs block: the server ignores `logprobs`, which
    no retry changes (a block that is there but broken is still retried as malformed)."""
    return generated_token(body) if first_choice(body).get("logprobs") is not None else None


async def run_probe(api: AsyncApi, model: str) -> ProbeResult:
    base = {"model": model, "temperature": 0, "logprobs": 1, "max_tokens": 1}
    try:
        generated_pair = await api.call("POST", "completions", {**base, "prompt": PROBE_PROMPT}, _generated_or_none)
    except ApiError as error:
        return _completions_failure(error)
    if generated_pair is None:
        return ProbeResult(False, "the server's /completions answers without logprobs (it ignores logprobs=1 and echo), "
                                  "so it gives no prompt logprobs", skippable=False)
    token, generated = generated_pair
    if not token:
        return ProbeResult(False, f"the probe's greedy token after {PROBE_PROMPT!r} is empty; cannot check prompt logprobs")
    prompt = PROBE_PROMPT + token
    try:
        echoed = await api.call("POST", "completions", {**base, "prompt": prompt, "echo": True},
                                lambda body: parse_echo(body, prompt))
    except ApiError as error:
        return _completions_failure(error)
    at_token = [t for t in echoed if t.start == len(PROBE_PROMPT)]
    if not at_token or at_token[0].logprob is None:
        return ProbeResult(False, f"the echoed prompt has no token starting where the generated {token!r} was appended "
                                  "(echo or text_offset unsupported)", token, generated)
    echo_value = at_token[0].logprob
    details = (f"greedy {token!r} after {PROBE_PROMPT!r} has logprob {generated:.4f} when generated "
               f"but {echo_value:.4f} as an echoed prompt token")
    if abs(echo_value - generated) > PROBE_ABS_TOL:
        return ProbeResult(False, f"the server's prompt logprobs are not log p(token | previous tokens): {details} "
                                  "(llama-cpp-python's server is off by one like this)", token, generated, echo_value)
    return ProbeResult(True, details, token, generated, echo_value)
