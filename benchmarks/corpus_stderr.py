"""The bootstrap stderr of a corpus metric: harness.scoring.corpus_stderr against lm-eval's own.

    .venv/bin/python benchmarks/corpus_stderr.py [--docs 500,5153] [--out corpus_stderr.json]

For each document count, random items (loglikelihoods for perplexity, binary gold/prediction
pairs for matthews_corrcoef) go through lm-eval 0.4.13's `bootstrap_stderr` in one process
(DISABLE_MULTIPROC=1; by default lm-eval spreads the same draws over a pool of every core) and
through harness's `bootstrap_stderr`, at the same resample count: 100,000 for perplexity (lm-eval's
default), 2,000 for mcc (lm-eval calls sklearn once per resample, which makes 100,000 take minutes).
Printed: reference and candidate wall times with their ratio, whether the two stderrs are the same
float, then the absolute numbers; everything also goes to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.scoring import corpus  # noqa: E402
from harness.scoring.corpus_stderr import bootstrap_stderr  # noqa: E402

ITERS = {"perplexity": 100_000, "matthews_corrcoef": 2_000}


def _timed(fn: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def case(aggregation: str, n: int, seed: int = 0) -> dict[str, Any]:
    from lm_eval.api import metrics as lm

    rng = random.Random(seed)
    if aggregation == "perplexity":
        theirs_items: list[Any] = [-rng.uniform(0.1, 30.0) for _ in range(n)]
        ours_items: list[Any] = [[ll] for ll in theirs_items]
        theirs_fn: Callable[..., float] = lm.perplexity
    else:
        theirs_items = [(rng.randint(0, 1), rng.randint(0, 1)) for _ in range(n)]
        ours_items = [list(p) for p in theirs_items]
        theirs_fn = lm.matthews_corrcoef
    iters = ITERS[aggregation]
    reference, t_ref = _timed(lambda: lm.bootstrap_stderr(theirs_fn, theirs_items, iters))
    ours, t_ours = _timed(lambda: bootstrap_stderr(aggregation, corpus.AGGREGATIONS[aggregation], ours_items, iters))
    return {"aggregation": aggregation, "docs": n, "resamples": iters, "lm_eval_s": t_ref, "harness_s": t_ours,
            "ratio": t_ours / t_ref, "lm_eval_stderr": float(reference), "harness_stderr": ours,
            "identical": ours == float(reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="500,5153", help="comma-separated document counts")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["DISABLE_MULTIPROC"] = "1"
    rows = [case(a, int(n)) for n in args.docs.split(",") for a in ITERS]
    print(f"{'metric':<18} {'docs':>6} {'resamples':>9} {'lm-eval s':>10} {'harness s':>10} {'ratio':>7}  same float")
    for r in rows:
        print(f"{r['aggregation']:<18} {r['docs']:>6} {r['resamples']:>9} {r['lm_eval_s']:>10.2f} {r['harness_s']:>10.2f} "
              f"{r['ratio']:>7.3f}  {r['identical']}")
    for r in rows:
        print(f"{r['aggregation']} n={r['docs']}: stderr {r['harness_stderr']!r} (lm-eval {r['lm_eval_stderr']!r})")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
