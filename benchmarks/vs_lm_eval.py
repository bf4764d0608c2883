"""harness vs lm-evaluation-harness 0.4.13: same model, same documents, same batch size.

Each tool runs in its own process on the embedded SmolLM2-135M-Instruct (fp32, CPU):
200 HellaSwag documents (0-shot) and two MMLU subjects (5-shot). Printed side by side: wall
time of each (start-up included), the ratio, harness's time outside model forward passes, the
cached re-run, and whether the scores are identical.

    .venv/bin/python -m benchmarks.vs_lm_eval [--data ../shared/data] [--hellaswag 200]
        [--subjects abstract_algebra,global_facts] [--batch-size 8]

Needs the shared data kit (or any mirror laid out like it) and lm-eval (a dev dependency).
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

import duckdb

from harness.backends.embedded import ensure_hf_dir
from harness.tasks.hellaswag import mirror_to_hub_row

REPO = Path(__file__).resolve().parent.parent


def make_mirror(src: Path, dst: Path, n_hellaswag: int, subjects: list[str]) -> None:
    """A mirror both tools read: HellaSwag rows in hub schema (so lm-eval's process_docs applies), MMLU as is."""
    (dst / "hellaswag").mkdir(parents=True)
    with open(src / "hellaswag" / "hellaswag_val.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(n_hellaswag), handle)]
    with open(dst / "hellaswag" / "hellaswag_val.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row if "ctx_a" in row else mirror_to_hub_row(row)) + "\n")
    for split in ("dev", "test"):
        (dst / "mmlu" / split).mkdir(parents=True)
        for subject in subjects:
            (dst / "mmlu" / split / f"{subject}_{split}.csv").symlink_to(src / "mmlu" / split / f"{subject}_{split}.csv")


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return elapsed, result


def harness_samples(db: Path, run_id: str) -> tuple[dict, dict, dict]:
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT task, doc_id, loglikelihoods, metrics FROM samples WHERE run_id = ?", [run_id]).fetchall()
    meta = json.loads(con.execute("SELECT metadata FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])
    metrics = {(t, m): v for t, m, v in con.execute("SELECT task, metric, value FROM metrics WHERE run_id = ?", [run_id]).fetchall()}
    con.close()
    samples = {(t, str(d)): (lls, json.loads(m)) for t, d, lls, m in rows}
    return samples, metrics, meta


def compare(ours: dict, theirs: dict) -> tuple[float, int, int]:
    """Largest per-sample loglikelihood difference, samples compared, samples whose correctness differs."""
    worst, compared, differ = 0.0, 0, 0
    for task, docs in theirs["samples"].items():
        for doc_id, ref in docs.items():
            lls, metrics = ours[(task, doc_id)]
            worst = max(worst, max(abs(a - b) for a, b in zip(lls, ref["loglikelihoods"])))
            differ += any(metrics[m] != ref[m] for m in ("acc", "acc_norm") if m in ref)
            compared += 1
    return worst, compared, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--hellaswag", type=int, default=200)
    parser.add_argument("--subjects", default="abstract_algebra,global_facts")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    subjects = args.subjects.split(",")
    tasks = ",".join(["hellaswag"] + [f"mmlu_{s}" for s in subjects])
    model_dir = ensure_hf_dir()
    work = Path(tempfile.mkdtemp(prefix="vs_lm_eval-"))
    make_mirror(args.data, work / "mirror", args.hellaswag, subjects)
    env = dict(os.environ, HARNESS_DATA_DIR=str(work / "mirror"), HARNESS_DATA_SOURCE="mirror", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_CACHE=str(work / "hf-datasets"))

    ref_out = work / "lm_eval.json"
    lm_wall, _ = timed([sys.executable, "-m", "benchmarks.lm_eval_reference", "--pretrained", str(model_dir), "--tasks", tasks,
                        "--limit", str(args.hellaswag), "--batch-size", str(args.batch_size), "--out", str(ref_out)], env)
    theirs = json.loads(ref_out.read_text())

    db = work / "harness.duckdb"
    run = [sys.executable, "-m", "harness", "run", "--tasks", tasks, "--limit", str(args.hellaswag), "--batch-size",
           str(args.batch_size), "--db", str(db), "--no-progress"]
    our_wall, first = timed(run + ["--json", str(work / "h1.json")], env)
    cached_wall, _ = timed(run + ["--json", str(work / "h2.json")], env)
    run_id = json.loads((work / "h1.json").read_text())["run_id"]
    ours, metrics, meta = harness_samples(db, run_id)
    forward = meta["backend"].get("forward_seconds")
    worst, compared, differ = compare(ours, theirs)

    print(f"model {model_dir} (fp32, CPU, {os.cpu_count()} cores), batch size {args.batch_size}, tasks {tasks}, limit {args.hellaswag}")
    print(f"{'':34}{'lm-eval 0.4.13':>16}{'harness':>12}{'ratio':>8}")
    print(f"{'wall time, start-up included (s)':34}{lm_wall:>16.1f}{our_wall:>12.1f}{our_wall / lm_wall:>8.2f}")
    print(f"{'  model load + evaluate (s)':34}{sum(theirs['seconds'].values()):>16.1f}{'':>12}")
    if forward is not None:
        print(f"{'  harness forward passes (s)':34}{'':>16}{forward:>12.1f}")
        print(f"{'  harness outside forward (s)':34}{'':>16}{our_wall - forward:>12.1f}")
    print(f"{'cached re-run (s)':34}{'':>16}{cached_wall:>12.1f}")
    for task, res in sorted(theirs["results"].items()):
        for metric, value in sorted(res.items()):
            print(f"{task + ' ' + metric:34}{value:>16.4f}{metrics[(task, metric)]:>12.4f}{'same' if abs(value - metrics[(task, metric)]) < 1e-12 else 'DIFF':>8}")
    print(f"per-sample: {compared} documents, max |Δ loglikelihood| = {worst:.2e}, correctness differs on {differ}")


if __name__ == "__main__":
    main()
