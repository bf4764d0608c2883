"""The sequential gate on a real model: documents used and wall time against the full gate.

HellaSwag, 2,000 documents of ../shared/data (HARNESS_DATA_DIR), the embedded SmolLM2-135M through
the hf backend. Two candidates against the stored baseline run of the same model:
- the model itself (must pass), and
- a deliberately broken checkpoint: every weight matrix with Gaussian noise of --noise times its own
  standard deviation added (seeded), enough to lose several points (must fail).
Each gate runs in its own database that holds only the imported baseline run, so no answer comes
from the cache. The full gate is `harness run` of the candidate on all 2,000 documents (in a
fresh database) plus `harness gate`; for the model itself that run is the baseline's own run, the
same computation.

    HARNESS_DATA_DIR=../shared/data .venv/bin/python benchmarks/sequential_gate_real.py [--docs 2000] [--noise 0.1]
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

HARNESS = str(Path(sys.executable).with_name("harness"))
MODEL = "hf:smollm2-135m-instruct"


def harness(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([HARNESS, *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"harness {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done


def noised_model(out: Path, noise: float, seed: int = 0) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.backends.embedded import ensure_hf_dir

    source = ensure_hf_dir()
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * noise)
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return f"hf:{out}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sequential_gate_real.json"))
    args = parser.parse_args()
    if not os.environ.get("HARNESS_DATA_DIR"):
        sys.exit("set HARNESS_DATA_DIR to ../shared/data (HellaSwag's 10,042 validation documents)")
    work = Path(tempfile.mkdtemp(prefix="seqgate-"))
    common = ["--tasks", "hellaswag", "--limit", str(args.docs), "--no-progress"]
    base_db = work / "base.duckdb"
    base_s, _ = harness("run", "--model", MODEL, *common, "--tag", "base", "--db", str(base_db))
    harness("export", "base", "--parquet", str(work / "export"), "--db", str(base_db))
    broken = noised_model(work / "broken", args.noise)
    rows = []
    for name, spec in (("itself", MODEL), ("broken", broken)):
        seq_db = work / f"seq-{name}.duckdb"
        harness("import", str(work / "export"), "--db", str(seq_db))
        seq_s, seq = harness("gate", "--baseline", "base", "--candidate-model", spec, "--sequential", "--no-progress",
                             "--junit", str(work / f"{name}.xml"), "--db", str(seq_db))
        if name == "itself":
            full_run_s = base_s
        else:
            full_db = work / "full-broken.duckdb"
            harness("import", str(work / "export"), "--db", str(full_db))
            full_run_s, _ = harness("run", "--model", spec, *common, "--tag", "cand", "--db", str(full_db))
        gate_db = base_db if name == "itself" else work / "full-broken.duckdb"
        if name == "itself":
            harness("run", "--model", MODEL, *common, "--tag", "cand", "--db", str(gate_db))  # all from the cache
        gate_s, full = harness("gate", "--baseline", "base", "--candidate", "cand", "--db", str(gate_db))
        used = [line for line in seq.stdout.splitlines() if line.startswith("Evaluated")]
        rows.append({"candidate": name, "sequential_exit": seq.returncode, "full_exit": full.returncode,
                     "sequential_wall_s": round(seq_s, 1), "full_wall_s": round(full_run_s + gate_s, 1),
                     "ratio": round(seq_s / (full_run_s + gate_s), 3), "evaluated": used[0] if used else "",
                     "table": [line for line in seq.stdout.splitlines() if line.startswith("| hellaswag")]})
        print(json.dumps(rows[-1], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"docs": args.docs, "noise": args.noise, "baseline_run_s": round(base_s, 1),
                                    "rows": rows}, indent=2))
    print(f"{'candidate':10s} {'seq exit':>8s} {'full exit':>9s} {'seq s':>8s} {'full s':>8s} {'ratio':>6s}  documents")
    for r in rows:
        print(f"{r['candidate']:10s} {r['sequential_exit']:8d} {r['full_exit']:9d} {r['sequential_wall_s']:8.1f} "
              f"{r['full_wall_s']:8.1f} {r['ratio']:6.3f}  {r['evaluated']}")


if __name__ == "__main__":
    main()
