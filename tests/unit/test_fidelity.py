"""Distribution fidelity (harness/scoring/fidelity.py, harness/run/fidelity.py) and the backends'
token_logprobs capability.

The statistics are checked against a brute-force, token-by-token computation of llama.cpp's
perplexity.cpp formulas on small random distributions; the window plan against a fake backend
that records what it is asked; and the whole path on the embedded SmolLM2-135M-Instruct: hf
against itself (exactly zero) and the Q4_1 GGUF in llama.cpp against its float32 dequantisation
in torch (small but real). The float32-GGUF-vs-hf agreement of token_logprobs is checked elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from harness.backends.base import Backend, ModelSpec, make_backend, parse_model_spec
from harness.core.errors import UsageError
from harness.run.fidelity import corpus_tokens, measure_fidelity, window_count
from harness.scoring.fidelity import LOG_P_FLOOR, FidelityAccumulator, mean_and_uncertainty, token_stats
from harness.tasks.corpora import corpus_names, corpus_text

# Q4_1 in llama.cpp (f16 KV cache) against its float32 dequantisation in torch, gsm8k-train, 2 windows
# of 512 (510 scored tokens), llama-cpp-python 0.3.36 AVX2 build, 2 threads: mean KLD 0.00197 ± 0.00011,
# p99 0.0120, max 0.024, same top p 98.63 ± 0.52 %, RMS Δp 1.47 ± 0.08 %, ln(PPL(Q)/PPL(base)) 0.0005 ± 0.0027
# (PPL 3.983 -> 3.985). Over 4 windows (1020 tokens): KLD 0.00217 ± 0.00009, same top p 97.25 ± 0.51 %,
# ln ratio 0.0034 ± 0.0022. Bounds: about 5x the KLD and 3x the top-1 misses, room for another CPU's
# kernels; a real bug (a shifted position, a wrong token) costs whole nats and most of the agreement.
Q4_KLD_MAX = 0.01
Q4_SAME_TOP_MIN = 94.0
Q4_LN_PPL_MAX = 0.02


# -- brute force --------------------------------------------------------------------------------


def random_logprobs(rng: np.random.Generator, n: int, vocab: int, scale: float) -> np.ndarray:
    logits = rng.normal(size=(n, vocab)) * scale
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)


def brute_kld(base: np.ndarray, child: np.ndarray) -> list[float]:
    out = []
    for lb_row, lc_row in zip(base.tolist(), child.tolist()):
        out.append(sum(math.exp(lb) * (lb - lc) for lb, lc in zip(lb_row, lc_row) if lb > LOG_P_FLOOR))
    return out


def llama_se(values: list[float]) -> float:
    """perplexity.cpp's mean_and_uncertainty error, written out from its running sums."""
    n = len(values)
    f = sum(values) / n
    df = sum(v * v for v in values) / n - f * f
    return math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """200 positions over 40 tokens; scale 6 makes peaked rows with log-probs under -16 (the floor)."""
    rng = np.random.default_rng(7)
    base = random_logprobs(rng, 200, 40, 6.0)
    child = (base + rng.normal(size=base.shape).astype(np.float32) * 0.8).astype(np.float64)
    child = (child - np.log(np.exp(child).sum(axis=1, keepdims=True))).astype(np.float32)
    targets = rng.integers(0, 40, size=200)
    return base, child, targets


def test_floor_is_exercised(pair) -> None:
    assert (pair[0] <= LOG_P_FLOOR).any()


def test_statistics_match_brute_force(pair) -> None:
    base, child, targets = pair
    accumulator = FidelityAccumulator()
    for start in range(0, 200, 64):  # window by window, as measure_fidelity adds them
        accumulator.add(base[start : start + 64], child[start : start + 64], targets[start : start + 64])
    got = accumulator.summary()

    kld = brute_kld(base, child)
    assert np.allclose(accumulator.stats().kld, kld, rtol=1e-9, atol=1e-12)
    assert got["n_tokens"] == 200
    assert got["kld_mean"] == pytest.approx(sum(kld) / 200, rel=1e-9)
    assert got["kld_se"] == pytest.approx(llama_se(kld), rel=1e-9)
    ordered = sorted(kld)
    assert got["kld_median"] == pytest.approx((ordered[99] + ordered[100]) / 2, rel=1e-9)
    p = 0.99 * 199  # perplexity.cpp's percentile: linear interpolation at fraction * (n - 1)
    assert got["kld_p99"] == pytest.approx(ordered[int(p)] * (1 - p % 1) + ordered[int(p) + 1] * (p % 1), rel=1e-9)
    assert got["kld_max"] == pytest.approx(ordered[-1], rel=1e-9)

    same = [int(np.argmax(b)) == int(np.argmax(c)) for b, c in zip(base, child)]
    top = sum(same) / 200
    assert 0 < top < 1
    assert got["same_top_pct"] == pytest.approx(100 * top)
    assert got["same_top_pct_se"] == pytest.approx(100 * math.sqrt(top * (1 - top) / 199))

    lb = [float(base[i, t]) for i, t in enumerate(targets)]
    lc = [float(child[i, t]) for i, t in enumerate(targets)]
    dp = [math.exp(c) - math.exp(b) for b, c in zip(lb, lc)]
    mse = sum(d * d for d in dp) / 200
    assert got["delta_p_rms_pct"] == pytest.approx(100 * math.sqrt(mse), rel=1e-9)
    assert got["delta_p_rms_pct_se"] == pytest.approx(100 * 0.5 / math.sqrt(mse) * llama_se([d * d for d in dp]), rel=1e-9)
    assert got["delta_p_mean_pct"] == pytest.approx(100 * sum(dp) / 200, rel=1e-9)

    # ln(PPL(Q)/PPL(base)) and its error as perplexity.cpp combines them: two SEs and a covariance
    nll_q, nll_b = [-v for v in lc], [-v for v in lb]
    cov = (sum(a * b for a, b in zip(nll_q, nll_b)) / 200 - (sum(nll_q) / 200) * (sum(nll_b) / 200)) / 199
    ratio_se = math.sqrt(llama_se(nll_q) ** 2 + llama_se(nll_b) ** 2 - 2 * cov)
    assert got["ln_ppl_ratio"] == pytest.approx(sum(nll_q) / 200 - sum(nll_b) / 200, rel=1e-9)
    assert got["ln_ppl_ratio_se"] == pytest.approx(ratio_se, rel=1e-6)
    assert got["ppl_base"] == pytest.approx(math.exp(sum(nll_b) / 200), rel=1e-9)
    assert got["ppl_child"] == pytest.approx(math.exp(sum(nll_q) / 200), rel=1e-9)

    # llama-perplexity's base file stores log-probs no lower than max(row min, row max - 16)
    floors = [max(float(row.min()), float(row.max()) - 16) for row in base]
    stored = [max(v, f) for v, f in zip(lb, floors)]
    assert any(v < f for v, f in zip(lb, floors))  # the clamp is exercised
    assert got["ln_ppl_ratio_llama_cpp"] == pytest.approx(sum(nll_q) / 200 + sum(stored) / 200, rel=1e-9)
    assert got["ppl_base_llama_cpp"] == pytest.approx(math.exp(-sum(stored) / 200), rel=1e-9)


def test_identical_distributions_score_zero(pair) -> None:
    base, _, targets = pair
    got = FidelityAccumulator([token_stats(base, base, targets)]).summary()
    assert got["kld_mean"] == 0 and got["kld_max"] == 0 and got["ln_ppl_ratio"] == 0 and got["ln_ppl_ratio_se"] == 0
    assert got["same_top_pct"] == 100 and got["delta_p_rms_pct"] == 0 and got["delta_p_rms_pct_se"] == 0
    assert got["ln_ppl_ratio_llama_cpp"] >= 0  # the clamp only ever raises the stored base log-prob


def test_mean_and_uncertainty_needs_more_than_ten_values() -> None:
    assert mean_and_uncertainty(np.arange(10.0)) == (4.5, 0.0)
    assert mean_and_uncertainty(np.arange(11.0))[1] == pytest.approx(np.std(np.arange(11.0)) / math.sqrt(10))


def test_shapes_are_checked(pair) -> None:
    base, child, targets = pair
    with pytest.raises(ValueError):
        token_stats(base, child[:, :-1], targets)
    with pytest.raises(ValueError):
        token_stats(base, child, targets[:-1])


# -- the window plan, on a fake backend -----------------------------------------------------------


class FakeBackend(Backend):
    """Uniform rows except a spike on token (t + shift) % vocab at row t; records the windows asked."""

    name = "fake"
    supports = Backend.supports | {"token_logprobs"}

    def __init__(self, vocab: int = 16, add_bos: bool = False, shift: int = 0) -> None:
        super().__init__(ModelSpec("fake", "x", {}))
        self.vocab, self.add_bos, self.shift = vocab, add_bos, shift
        self.asked: list[list[int]] = []

    def fingerprint(self) -> str:
        return "fake"

    def special_ids(self) -> dict:
        return {"bos": 99, "add_bos": self.add_bos, "vocab_size": self.vocab}

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) % self.vocab for c in text]

    def token_logprobs(self, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, np.ndarray]]:
        for i, window in enumerate(windows):
            self.asked.append(list(window))
            logits = np.zeros((len(window), self.vocab), dtype=np.float32)
            logits[np.arange(len(window)), (np.arange(len(window)) + self.shift) % self.vocab] = 3.0
            yield i, logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_windows_and_scored_positions_follow_llama_perplexity() -> None:
    tokens = list(range(16)) * 5  # 80 tokens: 4 whole windows of 20, nothing left over
    base, child = FakeBackend(add_bos=True), FakeBackend(add_bos=True, shift=1)
    got = measure_fidelity(base, child, tokens, n_ctx=20, n_windows=None)
    assert got["windows"] == 4 and got["n_ctx"] == 20
    assert got["n_tokens"] == 4 * (20 - 1 - 10)  # positions 10 .. 18, each predicting the next token
    assert [w[1:] for w in base.asked] == [tokens[k * 20 + 1 : (k + 1) * 20] for k in range(4)]
    assert all(w[0] == 99 for w in base.asked + child.asked)  # BOS first in every window
    # row t spikes on t (base) and t + 1 (child): never the same top token
    assert got["same_top_pct"] == 0
    assert measure_fidelity(base, child, tokens, n_ctx=20, n_windows=2)["windows"] == 2


def test_true_next_token_is_the_window_token_after_the_position() -> None:
    # the base's row t spikes on token (t + 1) % 16 and window token t + 1 is exactly that
    tokens = [t % 16 for t in range(64)]
    base = FakeBackend(shift=1)
    stats = measure_fidelity(base, base, tokens, n_ctx=32, n_windows=None)
    spike = math.exp(3.0) / (math.exp(3.0) + 15)
    assert stats["ppl_base"] == pytest.approx(1 / spike, rel=1e-5)


def test_refusals() -> None:
    with pytest.raises(UsageError, match="cannot be compared"):
        measure_fidelity(FakeBackend(16), FakeBackend(17), list(range(40)), 8, None)
    with pytest.raises(UsageError, match="at least 40"):
        window_count(39, 20, None)
    with pytest.raises(UsageError):
        window_count(100, 20, 0)


def test_base_backend_refuses_token_logprobs() -> None:
    from harness.backends.replay import ReplayBackend

    assert "token_logprobs" not in ReplayBackend.supports
    with pytest.raises(UsageError):
        Backend.token_logprobs(FakeBackend(), [[1]])


def test_corpora_are_registered_and_stable() -> None:
    assert {"gsm8k-train", "hellaswag-val"} <= set(corpus_names())
    for name in ("gsm8k-train", "hellaswag-val"):
        text, digest = corpus_text(name)
        assert len(text) > 5000 and corpus_text(name) == (text, digest)
    assert corpus_text("gsm8k-train")[0].startswith("Natalia sold clips")
    with pytest.raises(UsageError):
        corpus_text("nope")


# -- the embedded model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> Iterator[Backend]:
    backend = make_backend(parse_model_spec("hf:smollm2-135m-instruct"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gguf() -> Iterator[Backend]:
    backend = make_backend(parse_model_spec("gguf:embedded", "n_threads=2"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gsm8k_tokens(hf: Backend) -> list[int]:
    return corpus_tokens(hf, corpus_text("gsm8k-train")[0])


def test_hf_against_itself_is_exact(hf: Backend, gsm8k_tokens: list[int]) -> None:
    assert "token_logprobs" in hf.supports
    got = measure_fidelity(hf, hf, gsm8k_tokens, n_ctx=256, n_windows=2)
    assert got["windows"] == 2 and got["n_tokens"] == 2 * 127
    assert abs(got["kld_mean"]) < 1e-6 and got["kld_max"] < 1e-6
    assert got["same_top_pct"] == 100.0 and got["ln_ppl_ratio"] == 0.0
    assert 1 < got["ppl_base"] < 20  # a 135M model on grade-school maths text


def test_q4_1_gguf_against_its_float32_dequantisation(hf: Backend, gguf: Backend, gsm8k_tokens: list[int]) -> None:
    got = measure_fidelity(hf, gguf, gsm8k_tokens, n_ctx=512, n_windows=2)
    print("\nQ4_1 (llama.cpp) vs float32 (torch):", {k: round(v, 6) for k, v in got.items()})
    assert got["n_tokens"] == 2 * 255
    assert 0 < got["kld_mean"] < Q4_KLD_MAX
    assert got["same_top_pct"] > Q4_SAME_TOP_MIN
    assert abs(got["ln_ppl_ratio"]) < Q4_LN_PPL_MAX


def logsumexp_rows(rows: np.ndarray) -> np.ndarray:
    values = rows.astype(np.float64)
    peak = values.max(axis=1, keepdims=True)
    return peak[:, 0] + np.log(np.exp(values - peak).sum(axis=1))


def test_hf_rows_are_normalised(hf: Backend, gsm8k_tokens: list[int]) -> None:
    windows = [gsm8k_tokens[:40], gsm8k_tokens[40:45]]
    answers = dict(hf.token_logprobs(windows))
    assert sorted(answers) == [0, 1]
    for i, rows in answers.items():
        assert rows.dtype == np.float32 and rows.shape == (len(windows[i]), hf.special_ids()["vocab_size"])
        assert np.abs(logsumexp_rows(rows)).max() < 1e-4
    with pytest.raises(UsageError, match="max_length"):
        list(hf.token_logprobs([[0] * 10_000]))


def test_gguf_rows_are_normalised_and_independent_of_the_cache(gguf: Backend, gsm8k_tokens: list[int]) -> None:
    assert "token_logprobs" in gguf.supports
    window = gsm8k_tokens[:40]
    (_, first), (_, prefix), (_, again) = gguf.token_logprobs([window, window[:10], window])
    assert first.dtype == np.float32 and first.shape == (40, gguf.special_ids()["vocab_size"])
    assert np.abs(logsumexp_rows(first)).max() < 1e-4
    assert np.array_equal(first, again)
    assert np.abs(prefix - first[:10]).max() < 1e-3  # causal: a prefix's rows are the window's first rows
    with pytest.raises(UsageError, match="n_ctx"):
        list(gguf.token_logprobs([[0] * 5000]))
