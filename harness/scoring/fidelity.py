"""Distribution fidelity of a child model against its base, as `llama-perplexity --kl-divergence`.

Every formula follows llama.cpp's tools/perplexity/perplexity.cpp (the copy vendored in
llama-cpp-python 0.3.36), so our numbers can be put next to its output:

- per scored token (`log_softmax(n_vocab, logits, base_log_prob, tok, kld)`):
  KL(base || child) = sum_i p_base(i) * (log p_base(i) - log p_child(i)), summed only over the
  tokens with log p_base(i) > -16 (llama.cpp keeps the base's log-probabilities as 16-bit steps
  over [max - 16, max] and leaves the rest out of the sum; we keep that cut-off but not the 16-bit
  rounding, a storage artefact worth about 1e-4 nats per log-probability);
  "same top p": argmax of the child's row == argmax of the base's (first index on ties, as its
  strict `>` scans); delta-p = p_child(true next token) - p_base(true next token); and the two
  log-probabilities of the true next token.
- `mean_and_uncertainty(sum, sum2, count)`: mean f = sum/n and standard error
  sqrt((sum2/n - f^2) / (n - 1)), 0 when that variance is not positive or n <= 10. It gives the
  mean KLD, the mean delta-p and (over delta-p^2, delta-p^4) the mean squared delta-p.
- RMS delta-p = sqrt(mean delta-p^2), its error 0.5 / rms * SE(mean delta-p^2).
- same top p = n_same / n, its error sqrt(p (1 - p) / (n - 1)).
- ln(PPL(child)/PPL(base)) = mean(nll_child) - mean(nll_base) = mean(logp_base - logp_child); its
  error sqrt(se_child^2 + se_base^2 - 2 cov) with cov = (mean(ab) - mean(a) mean(b)) / (n - 1) is,
  term for term, mean_and_uncertainty over the paired differences, which is what we compute (it
  cannot go negative under rounding when child == base).
- PPL = exp(mean nll), its error PPL * SE(mean nll).
- one deliberate difference: llama-perplexity reads log p_base(true token) back from its 16-bit
  base file, where every log-prob below max(row minimum, row maximum - 16) is stored as that floor.
  So its "Mean PPL(base)" and "ln(PPL(Q)/PPL(base))" under-count the base's surprise at very
  unlikely tokens (on gsm8k-train, SmolLM2-135M F32, 8 x 512: PPL(base) 4.630 where its own
  perplexity run says 4.7236, and ln ratio +0.020 for every child). We report the exact values
  (`ppl_base`, `ln_ppl_ratio`, equal to llama-perplexity's plain perplexity) and, to compare
  with its --kl-divergence output, the clamped ones as `ppl_base_llama_cpp`,
  `ln_ppl_ratio_llama_cpp` (+ `_se`).
- median: the middle value (mean of the two middle ones); percentile(values, f): linear
  interpolation at f * (n - 1) of the sorted values (numpy's default).

llama.cpp prints its full statistics only from 100 tokens on; these are computed for any n >= 1.
Probabilities (same top p, delta-p) are reported in percent, as llama.cpp prints them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LOG_P_FLOOR = -16.0  # perplexity.cpp: base log-probs at or below this are left out of the KL sum
ROW_BLOCK = 64  # rows per float64 reduction, so a window's KL never needs a [n_ctx, vocab] double array
MIN_COUNT_FOR_SE = 10  # mean_and_uncertainty reports an error only for more values than this


@dataclass(frozen=True)
class TokenStats:
    """Per-token values of a batch of scored positions (all float64 except same_top)."""

    kld: np.ndarray
    same_top: np.ndarray  # bool
    logp_base: np.ndarray
    logp_child: np.ndarray
    logp_base_floor: np.ndarray  # the lowest log-prob llama.cpp's base file can hold in each row

    @property
    def logp_base_stored(self) -> np.ndarray:
        """log p_base(true token) as llama-perplexity reads it back from its base file: clamped
        from below at max(row minimum, row maximum - 16)."""
        return np.maximum(self.logp_base, self.logp_base_floor)

    @property
    def delta_p(self) -> np.ndarray:
        return np.exp(self.logp_child) - np.exp(self.logp_base)


def token_stats(base: np.ndarray, child: np.ndarray, targets: Sequence[int]) -> TokenStats:
    """The statistics of rows of log-probabilities [n, vocab] whose true next tokens are `targets`."""
    if base.shape != child.shape or base.ndim != 2:
        raise ValueError(f"base and child log-probabilities must be the same [n, vocab] shape: {base.shape} vs {child.shape}")
    picks = np.asarray(targets, dtype=np.int64)
    if picks.shape != (len(base),):
        raise ValueError(f"{len(base)} rows need as many targets, got {picks.shape}")
    kld = np.empty(len(base), dtype=np.float64)
    for start in range(0, len(base), ROW_BLOCK):
        lb = base[start : start + ROW_BLOCK].astype(np.float64)
        lc = child[start : start + ROW_BLOCK].astype(np.float64)
        terms = np.where(lb > LOG_P_FLOOR, np.exp(lb) * (lb - lc), 0.0)
        kld[start : start + ROW_BLOCK] = terms.sum(axis=1)
    rows = np.arange(len(base))
    return TokenStats(
        kld=kld,
        same_top=base.argmax(axis=1) == child.argmax(axis=1),
        logp_base=base[rows, picks].astype(np.float64),
        logp_child=child[rows, picks].astype(np.float64),
        logp_base_floor=np.maximum(base.min(axis=1).astype(np.float64), base.max(axis=1).astype(np.float64) + LOG_P_FLOOR),
    )


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """perplexity.cpp's lambda of that name, from the values rather than their running sums."""
    n = len(values)
    if n < 1:
        return 0.0, 0.0
    mean = float(values.sum() / n)
    var = float((values * values).sum() / n) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > MIN_COUNT_FOR_SE else 0.0


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """perplexity.cpp's `percentile` lambda: linear interpolation at fraction * (n - 1)."""
    return float(np.percentile(sorted_values, 100.0 * fraction))


def summarize(stats: TokenStats) -> dict:
    """The summary llama-perplexity prints at the end of a --kl-divergence run (see the module docstring)."""
    n = len(stats.kld)
    if n == 0:
        raise ValueError("no scored tokens to summarise")
    kld = np.sort(stats.kld)
    kld_mean, kld_se = mean_and_uncertainty(stats.kld)
    nll_base, nll_base_se = mean_and_uncertainty(-stats.logp_base)
    nll_child, nll_child_se = mean_and_uncertainty(-stats.logp_child)
    ratio, ratio_se = mean_and_uncertainty(stats.logp_base - stats.logp_child)
    stored_ratio, stored_ratio_se = mean_and_uncertainty(stats.logp_base_stored - stats.logp_child)
    stored_nll_base = float(-stats.logp_base_stored.mean())
    delta_p = stats.delta_p
    dp_mean, dp_mean_se = mean_and_uncertainty(delta_p)
    mse, mse_se = mean_and_uncertainty(delta_p * delta_p)
    rms = math.sqrt(mse)
    same = float(stats.same_top.sum()) / n
    same_se = math.sqrt(same * (1.0 - same) / (n - 1)) if n > 1 else 0.0
    return {
        "n_tokens": n,
        "kld_mean": kld_mean, "kld_se": kld_se,
        "kld_median": float(np.median(kld)),
        "kld_p90": percentile(kld, 0.90), "kld_p95": percentile(kld, 0.95),
        "kld_p99": percentile(kld, 0.99), "kld_p999": percentile(kld, 0.999),
        "kld_max": float(kld[-1]), "kld_min": float(kld[0]),
        "same_top_pct": 100.0 * same, "same_top_pct_se": 100.0 * same_se,
        "delta_p_rms_pct": 100.0 * rms, "delta_p_rms_pct_se": 100.0 * (0.5 / rms * mse_se if rms > 0 else 0.0),
        "delta_p_mean_pct": 100.0 * dp_mean, "delta_p_mean_pct_se": 100.0 * dp_mean_se,
        "delta_p_max_abs_pct": 100.0 * float(np.abs(delta_p).max()),
        "ln_ppl_ratio": ratio, "ln_ppl_ratio_se": ratio_se,
        "ppl_base": math.exp(nll_base), "ppl_base_se": math.exp(nll_base) * nll_base_se,
        "ppl_child": math.exp(nll_child), "ppl_child_se": math.exp(nll_child) * nll_child_se,
        "ln_ppl_ratio_llama_cpp": stored_ratio, "ln_ppl_ratio_llama_cpp_se": stored_ratio_se,
        "ppl_base_llama_cpp": math.exp(stored_nll_base),
    }


@dataclass
class FidelityAccumulator:
    """Per-token statistics gathered window by window; only scalars per token are kept, so a long
    corpus costs a few doubles per token, never its rows of log-probabilities."""

    parts: list[TokenStats] = field(default_factory=list)

    def add(self, base: np.ndarray, child: np.ndarray, targets: Sequence[int]) -> None:
        self.parts.append(token_stats(base, child, targets))

    @property
    def n_tokens(self) -> int:
        return sum(len(p.kld) for p in self.parts)

    def stats(self) -> TokenStats:
        if not self.parts:
            empty = np.zeros(0, dtype=np.float64)
            return TokenStats(empty, np.zeros(0, dtype=bool), empty, empty, empty)
        return TokenStats(*(np.concatenate([getattr(p, name) for p in self.parts])
                            for name in ("kld", "same_top", "logp_base", "logp_child", "logp_base_floor")))

    def summary(self) -> dict:
        return summarize(self.stats())
