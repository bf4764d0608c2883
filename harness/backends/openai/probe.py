"""Does this server's echoed prompt logprob mean log p(token_i | tokens < i)? Ask it.

The probe generates one token greedily after a fixed prompt with logprobs=1 (a decode step, which
every server gets right because sampling depends on it), then echoes prompt + that token and
reads the prompt logprob of the same token. Both must be log p(token | prompt). A server that is
off by one (llama-cpp-python's server reports log p(token_i | tokens <= i)) answers with a number
several nats away; a chat-only endpoint has no /completions at all. Either way loglikelihood
tasks are refused before anything runs, instead of being scored with wrong numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.backends.openai.http import ApiError, AsyncApi
from harness.backends.openai.logprobs import generated_token, parse_echo

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

    def as_dict(self) -> dict:
        return asdict(self)


def _completions_failure(error: ApiError) -> ProbeResult:
    if error.status in NO_COMPLETIONS:
        return ProbeResult(False, f"the server has no usable /completions with logprobs ({error}); "
                                  "chat endpoints give no prompt logprobs")
    return ProbeResult(False, f"the prompt-logprob probe failed: {error}")


async def run_probe(api: AsyncApi, model: str) -> ProbeResult:
    base = {"model": model, "temperature": 0, "logprobs": 1, "max_tokens": 1}
    try:
        token, generated = await api.call("POST", "completions", {**base, "prompt": PROBE_PROMPT}, generated_token)
    except ApiError as error:
        return _completions_failure(error)
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
