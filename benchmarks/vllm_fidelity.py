"""hf vs vllm on a GPU: same model, same documents, same answers?

Runs the embedded SmolLM2-135M-Instruct (the dequantised float32 checkpoint both backends load)
through `harness run` twice, hf on CUDA and then vllm, on the shipped HellaSwag and MMLU fixtures,
into one DuckDB file, and prints per task: how often both pick the same answer, each one's
accuracy, and the spread of per-choice loglikelihood differences; then the wall time of each run.

    .venv/bin/python -m benchmarks.vllm_fidelity [--dtype float32] [--limit N] [--db PATH]
        [--vllm-args gpu_memory_utilization=0.5,...]

Each backend runs in its own process: vLLM starts engine processes of its own, which must not
inherit a CUDA context that torch created for the hf run. Needs a CUDA GPU and `harness[vllm]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.agreement import FIDELITY_TASKS, compare, format_table

REPO = Path(__file__).resolve().parent.parent


def harness_run(model: str, model_args: str, db: Path, limit: int | None) -> tuple[str, float]:
    """One `harness run` on the fixtures; returns (run id, wall seconds)."""
    summary = db.parent / f"summary-{model.partition(':')[0]}.json"
    command = [sys.executable, "-m", "harness", "run", "--model", model, "--model-args", model_args,
               "--tasks", ",".join(FIDELITY_TASKS), "--db", str(db), "--json", str(summary), "--no-progress"]
    if limit is not None:
        command += ["--limit", str(limit)]
    env = dict(os.environ, HARNESS_DATA_SOURCE="fixture")
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{model} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(summary.read_text())["run_id"], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", help="dtype of both backends (float32 | bfloat16 | float16)")
    parser.add_argument("--limit", type=int, default=None, help="documents per task (default: the whole fixture)")
    parser.add_argument("--db", type=Path, default=None, help="DuckDB file (default: a temporary one)")
    parser.add_argument("--vllm-args", default="", help="extra vllm model args, e.g. gpu_memory_utilization=0.5")
    args = parser.parse_args()

    db = args.db or Path(tempfile.mkdtemp(prefix="vllm-fidelity-")) / "runs.duckdb"
    hf_run, hf_seconds = harness_run("hf:smollm2-135m-instruct", f"device=cuda,dtype={args.dtype}", db, args.limit)
    vllm_args = ",".join(a for a in (f"dtype={args.dtype}", args.vllm_args) if a)
    vllm_run, vllm_seconds = harness_run("vllm:embedded", vllm_args, db, args.limit)

    results = compare(db, hf_run, vllm_run)
    print(f"hf ({args.dtype}, cuda) vs vllm ({args.dtype}) on {', '.join(FIDELITY_TASKS)} fixtures; db {db}")
    print(format_table(results, "hf", "vllm"))
    docs = sum(r.n_docs for r in results.values())
    same = sum(r.same_choice for r in results.values())
    print(f"\nsame answer on {same}/{docs} documents ({same / docs:.1%}); "
          f"max |Δll| {max(r.max_delta for r in results.values()):.2e}")
    print(f"wall time, start-up included: hf {hf_seconds:.1f} s, vllm {vllm_seconds:.1f} s")


if __name__ == "__main__":
    main()
