"""A recipe end to end on the embedded model, through the real command line: killed with SIGKILL
in the middle of a step and resumed (only the unfinished steps are redone), its lineage, its
checkpoints evaluated as `artifact:ID`, and the lineage pages of `harness report`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest import REPO, harness_cli

RECIPE = {
    "description": "test ladder",
    "parent": "hf:smollm2-135m-instruct",
    "seed": 7,
    "steps": [
        {"name": "f32", "kind": "export_gguf", "params": {"dtype": "F32"}},
        {"name": "q8", "kind": "quantize_gguf", "from": "f32", "params": {"type": "Q8_0"}},
        {"name": "q4", "kind": "quantize_gguf", "from": "f32", "params": {"type": "Q4_0"}},
    ],
    "evaluate": {"data": "fixture", "tasks": [{"name": "hellaswag", "limit": 6}]},
    "fidelity": {"corpus": "gsm8k-train", "n_ctx": 128, "windows": 3},
    "speed": {"prompts": 1, "input_len": 16, "output_len": 4},
    "gate": {"max_drop": 5.0, "min_samples": 5},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recipe")
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return root


def _env(workdir: Path) -> dict[str, str]:
    return {"HARNESS_ARTIFACTS_DIR": str(workdir / "artifacts")}


def _run_args(workdir: Path, out: str) -> list[str]:
    return ["recipe", "run", str(workdir / "recipe.yaml"), "--db", str(workdir / "db.duckdb"), "--no-progress",
            "--json", str(workdir / out)]


def _kill_during_step(workdir: Path, step: str) -> None:
    """Start the recipe and SIGKILL it as soon as `step` has a staging directory."""
    env = {**os.environ, **_env(workdir)}
    process = subprocess.Popen([sys.executable, "-m", "harness", *_run_args(workdir, "killed.json")], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    artifacts_dir = workdir / "artifacts"
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if artifacts_dir.is_dir() and any(artifacts_dir.glob(f".staging-*-{step}-*")):
                break
            time.sleep(0.02)
        assert process.poll() is None, f"the recipe ended before step {step} started: {process.stderr.read().decode()[-2000:]}"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def resumed(workdir: Path) -> dict:
    _kill_during_step(workdir, "q8")
    complete = [p for p in (workdir / "artifacts").iterdir() if not p.name.startswith(".")]
    assert all((p / "artifact.json").is_file() for p in complete), "an artifact dir without its manifest was left"
    assert len(complete) == 3, complete  # the embedded GGUF, its dequantized checkpoint, f32; not q8
    result = harness_cli(*_run_args(workdir, "resumed.json"), env=_env(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((workdir / "resumed.json").read_text())


def test_a_killed_recipe_redoes_only_the_unfinished_steps(resumed: dict) -> None:
    assert resumed["reused"] == ["f32"]
    assert resumed["made"] == ["q8", "q4"]
    assert set(resumed["nodes"]) == {"parent", "f32", "q8", "q4"}


def _checkpoints_are_linked_logged_models(tracking: str, summary: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    [experiment] = [e for e in client.search_experiments() if e.name == "harness"]
    models = {m.tags["harness.artifact_id"]: m for m in client.search_logged_models([experiment.experiment_id])}
    made = summary["nodes"]  # node name -> artifact id
    assert {made["f32"], made["q8"], made["q4"]} <= set(models)
    for name in ("q8", "q4"):
        child = models[made[name]]
        parent = models[child.tags["harness.parent_artifact_id"]]
        assert child.tags["harness.parent_model_id"] == parent.model_id
        assert child.source_run_id == parent.source_run_id  # both logged by the recipe's run


def test_a_finished_recipe_is_not_redone(workdir: Path, resumed: dict) -> None:
    con = duckdb.connect(str(workdir / "db.duckdb"), read_only=True)
    runs_before = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    con.close()
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"  # the reused recipe logged to a real MLflow store (docs/mlflow.md)
    result = harness_cli(*_run_args(workdir, "again.json"), "--mlflow-uri", tracking, "--mlflow-required", env=_env(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((workdir / "again.json").read_text())
    assert again["made"] == [] and again["reused"] == ["f32", "q8", "q4"]
    assert again["nodes"] == resumed["nodes"]
    _checkpoints_are_linked_logged_models(tracking, again)
    con = duckdb.connect(str(workdir / "db.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == runs_before  # evaluations resumed, not repeated
    assert con.execute("SELECT count(*) FROM edge_reports").fetchone()[0] == 4  # root, f32, q8, q4 edges
    con.close()


def _lineage(workdir: Path, artifact_id: str) -> dict:
    result = harness_cli("lineage", artifact_id[:10], "--db", str(workdir / "db.duckdb"), "--json", env=_env(workdir))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lineage_goes_to_the_root_with_a_report_per_edge(workdir: Path, resumed: dict) -> None:
    view = _lineage(workdir, resumed["nodes"]["q4"])
    assert [e["relation"] for e in view["edges"]] == ["quantized", "converted", "dequantized"]
    assert [e["step"] for e in view["edges"]] == ["q4", "f32", "embedded"]
    assert view["nodes"][0]["format"] == "gguf" and view["nodes"][-1]["format"] == "gguf"  # Q4_0 ... the shipped Q4_1
    q4_edge = view["edges"][0]
    assert q4_edge["params"]["type"] == "Q4_0" and q4_edge["seed"] == 7 and q4_edge["wall_seconds"] > 0
    assert q4_edge["peak_memory_bytes"] > 0 and q4_edge["versions"]
    for edge in view["edges"]:
        report = edge["report"]
        assert report is not None
        assert report["comparison"]["metrics"], "the paired comparison is stored"
        assert "passed" in report["gate"]
        assert report["fidelity"]["n_tokens"] > 0
        assert report["speed"]["child"]["decode_tokens_per_s"] > 0
    # The Q4_0 GGUF is smaller and further from the F32 parent than Q8_0 on the same corpus.
    q8_view = _lineage(workdir, resumed["nodes"]["q8"])
    kld_q8 = q8_view["edges"][0]["report"]["fidelity"]["kld_mean"]
    kld_q4 = q4_edge["report"]["fidelity"]["kld_mean"]
    assert 0 < kld_q8 < kld_q4
    assert q4_edge["report"]["size"]["child_bytes"] < q8_view["edges"][0]["report"]["size"]["child_bytes"]


def test_a_checkpoint_is_a_model_spec(workdir: Path, resumed: dict) -> None:
    q8 = resumed["nodes"]["q8"]
    result = harness_cli("run", "--model", f"artifact:{q8[:8]}", "--tasks", "hellaswag", "--limit", "3",
                         "--db", str(workdir / "db.duckdb"), "--json", str(workdir / "run.json"), "--no-progress",
                         env={**_env(workdir), "HARNESS_DATA_SOURCE": "fixture"})
    assert result.returncode == 0, result.stderr[-2000:]
    run_id = json.loads((workdir / "run.json").read_text())["run_id"]
    con = duckdb.connect(str(workdir / "db.duckdb"), read_only=True)
    joined = con.execute("SELECT a.artifact_id, r.model FROM runs r JOIN artifacts a ON a.model_fingerprint = r.model_fingerprint "
                         "WHERE r.run_id = ?", [run_id]).fetchall()
    con.close()
    assert joined == [(q8, f"artifact:{q8}")]


def test_report_has_lineage_pages(workdir: Path, resumed: dict) -> None:
    site = workdir / "site"
    result = harness_cli("report", "--out", str(site), "--db", str(workdir / "db.duckdb"), env=_env(workdir))
    assert result.returncode == 0, result.stderr
    index = (site / "lineage" / "index.html").read_text()
    assert resumed["nodes"]["q4"][:12] in index
    page = (site / "lineage" / f"{resumed['nodes']['q4'][:16]}.html").read_text()
    assert "Lineage of" in page and "Distribution fidelity" in page and "accuracy delta against size" in page
