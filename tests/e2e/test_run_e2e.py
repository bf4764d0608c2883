"""End to end on the real embedded model, through the real CLI and a real DuckDB file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, harness_cli

FIXTURE_ENV = {"HARNESS_DATA_SOURCE": "fixture"}
TASKS = "hellaswag,mmlu_anatomy"


def _summary(stdout: str) -> dict:
    """Parse the closing line: 'run ID: U unique requests, C from cache, K computed; stored in DB'."""
    line = [l for l in stdout.splitlines() if l.startswith("run ") and "unique requests" in l][-1]
    words = line.replace(",", "").replace(";", "").split()
    return {"run_id": words[1].rstrip(":"), "resumed": "(resumed)" in line,
            "unique": int(words[words.index("unique") - 1]), "cached": int(words[words.index("from") - 1]),
            "computed": int(words[words.index("computed") - 1])}


def _metrics(db: Path, run_id: str) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT task, metric, value, stderr, n FROM metrics WHERE run_id = ?", [run_id]).fetchall()
    con.close()
    return {(t, m): (v, s, n) for t, m, v, s, n in rows}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    db, out = tmp / "r.duckdb", tmp / "out.json"
    result = harness_cli("run", "--tasks", TASKS, "--limit", "6", "--db", str(db), "--json", str(out),
                         "--tag", "baseline", "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 0, result.stderr
    return db, out, result


def test_run_stores_everything_and_writes_json(first_run):
    db, out, result = first_run
    summary = json.loads(out.read_text())
    run_id = summary["run_id"]
    assert summary["model"] == "hf:smollm2-135m-instruct"
    assert set(summary["tasks"]) == {"hellaswag", "mmlu_anatomy"}
    acc = summary["tasks"]["hellaswag"]["acc_norm"]
    assert 0.0 <= acc["value"] <= 1.0 and acc["n"] == 6 and acc["stderr"] > 0
    assert "acc" in summary["tasks"]["mmlu_anatomy"]
    assert "± Stderr" in result.stdout and "hellaswag" in result.stdout

    con = duckdb.connect(str(db), read_only=True)
    status, meta = con.execute("SELECT status, metadata FROM runs WHERE run_id = ?", [run_id]).fetchone()
    assert status == "complete"
    meta = json.loads(meta)
    assert meta["git"]["sha"] and meta["libraries"]["torch"].startswith("2.13")
    assert meta["tasks"]["hellaswag"]["source"].startswith("fixture:")
    assert len(meta["tasks"]["mmlu_anatomy"]["dataset_fingerprint"]) == 64
    assert meta["backend"]["backend"] == "hf"
    rows = con.execute("SELECT task, count(*), count(DISTINCT doc_id) FROM samples WHERE run_id = ? GROUP BY task", [run_id]).fetchall()
    assert sorted(rows) == [("hellaswag", 6, 6), ("mmlu_anatomy", 6, 6)]
    lls, prompt, metrics = con.execute(
        "SELECT loglikelihoods, prompt, metrics FROM samples WHERE run_id = ? AND task = 'mmlu_anatomy' AND doc_id = 0", [run_id]
    ).fetchone()
    assert len(lls) == 4 and all(x < 0 for x in lls)
    assert prompt.endswith("Answer:") and "anatomy" in prompt
    assert json.loads(metrics)["acc"] in (0.0, 1.0)
    con.close()


def test_list_and_show(first_run):
    db, out, _ = first_run
    run_id = json.loads(out.read_text())["run_id"]
    listed = harness_cli("runs", "--db", str(db), "--tag", "baseline")
    assert listed.returncode == 0 and run_id in listed.stdout
    shown = harness_cli("show", "baseline", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert run_id in shown.stdout and "acc_norm" in shown.stdout and "source fixture:" in shown.stdout


def test_identical_rerun_is_served_from_cache(first_run):
    db, out, _ = first_run
    first = json.loads(out.read_text())
    out2 = out.with_name("again.json")
    result = harness_cli("run", "--tasks", TASKS, "--limit", "6", "--db", str(db), "--json", str(out2),
                         "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert summary["computed"] == 0 and summary["cached"] == summary["unique"] > 0
    second = json.loads(out2.read_text())
    assert second["run_id"] != first["run_id"]
    assert second["tasks"] == first["tasks"]


def _degraded_copy(src: Path, dst: Path) -> Path:
    """A sibling model: the same weights rounded to bfloat16 precision (a different model for the cache)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).to(torch.float32) for k, v in weights.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    return dst


def test_another_model_never_gets_these_answers(first_run, tmp_path):
    from harness.backends.embedded import ensure_hf_dir

    db, out, _ = first_run
    sibling = _degraded_copy(ensure_hf_dir(), tmp_path / "sibling")
    out2 = tmp_path / "sibling.json"
    result = harness_cli("run", "--model", f"hf:{sibling}", "--tasks", TASKS, "--limit", "6",
                         "--db", str(db), "--json", str(out2), "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert summary["cached"] == 0 and summary["computed"] == summary["unique"]
    con = duckdb.connect(str(db), read_only=True)
    fps = con.execute("SELECT DISTINCT model_fingerprint FROM runs").fetchall()
    assert len(fps) == 2
    a, b = (con.execute("SELECT loglikelihoods FROM samples WHERE run_id = ? AND task = 'hellaswag' ORDER BY doc_id",
                        [run_id]).fetchall() for run_id in (json.loads(out.read_text())["run_id"], summary["run_id"]))
    assert a != b  # bf16-rounded weights give (slightly) different loglikelihoods
    con.close()


def test_resume_after_sigkill(tmp_path):
    """SIGKILL half-way, run the same command again: nothing recomputed, nothing duplicated, same metrics."""
    db = tmp_path / "killed.duckdb"
    args = [sys.executable, "-m", "harness", "run", "--tasks", "hellaswag", "--limit", "40", "--db", str(db), "--no-progress"]
    env = dict(os.environ, **FIXTURE_ENV, HARNESS_LOG_LEVEL="INFO")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # the scheduler logs each write to the cache
        if "cached" in line and "answers" in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = duckdb.connect(str(db), read_only=True)
    status = con.execute("SELECT status FROM runs").fetchall()
    kept_answers = con.execute("SELECT count(*) FROM cache").fetchone()[0]
    kept_samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    con.close()
    assert status == [("running",)]
    assert 0 < kept_answers < 160

    resumed = harness_cli(*args[3:], env=FIXTURE_ENV)
    assert resumed.returncode == 0, resumed.stderr
    summary = _summary(resumed.stdout)
    assert summary["resumed"]
    assert summary["cached"] == kept_answers and summary["computed"] == summary["unique"] - kept_answers

    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM samples").fetchone() == (40, 40)
    assert con.execute("SELECT status FROM runs").fetchall() == [("complete",)]
    con.close()
    assert kept_samples <= 40

    clean_db = tmp_path / "clean.duckdb"
    clean = harness_cli(*args[3:8], "--db", str(clean_db), "--no-progress", env=FIXTURE_ENV)
    assert clean.returncode == 0, clean.stderr
    resumed_metrics = _metrics(db, summary["run_id"])
    clean_metrics = _metrics(clean_db, _summary(clean.stdout)["run_id"])
    assert resumed_metrics.keys() == clean_metrics.keys()
    for key, (value, _stderr, n) in clean_metrics.items():
        assert resumed_metrics[key][0] == pytest.approx(value, abs=1e-12) and resumed_metrics[key][2] == n
