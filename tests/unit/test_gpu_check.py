"""benchmarks.gpu_check at the tiny size on CPU: every part reports, and duckdb is never imported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_gpu_check_tiny_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), "--size", "tiny", "--device", "cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "gpu_check.md").is_file()
    report = json.loads((out / "gpu_check.json").read_text())
    markdown = (out / "gpu_check.md").read_text()
    assert "random" in markdown and "| compared |" in markdown and "| path |" in markdown

    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["torch"] and meta["transformers"] and meta["date"] and meta["command"]
    assert report["duckdb_imported"] is False
    parts = report["parts"]
    assert "error" not in parts["setup"], parts["setup"]
    for name in ("setup", "agreement", "throughput", "serving", "lora"):
        assert name in parts and parts[name]["wall_s"] >= 0

    agreement = parts["agreement"]
    assert "error" not in agreement, agreement
    assert agreement["requests"] >= 16 and "cpu bfloat16" in agreement["compared"]
    bf16 = agreement["compared"]["cpu bfloat16"]
    assert math.isfinite(bf16["max_abs_delta"]) and math.isfinite(bf16["mean_abs_delta"])
    assert bf16["max_abs_delta"] > 0 and bf16["mean_abs_delta"] > 0  # bfloat16 really ran
    assert bf16["max_abs_delta"] < 1.0

    throughput = parts["throughput"]
    assert "error" not in throughput, throughput
    assert throughput["harness"]["tokens_per_s"] > 0 and throughput["floor"]["tokens_per_s"] > 0
    assert throughput["floor_kept_logits"]["tokens_per_s"] > 0
    assert throughput["ratio_harness_over_floor_time"] > 0 and throughput["ratio_harness_over_floor_kept_logits_time"] > 0
    # the floor scores the same token sequences: it must agree with the harness in float32
    assert throughput["floor_vs_harness_scores"]["max_abs_delta"] < 1e-3
    # lm-eval is a dev dependency, installed here
    assert throughput["lm_eval"]["tokens_per_s"] > 0, throughput["lm_eval"]
    assert throughput["ratio_harness_over_lm_eval_time"] > 0
    assert throughput["lm_eval_vs_harness_scores"]["max_abs_delta"] < 1e-3
