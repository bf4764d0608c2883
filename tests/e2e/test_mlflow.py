"""MLflow tracking end to end: one real run of the embedded model logged to a sqlite MLflow store and read back
through MlflowClient against the DuckDB store; its gate verdict logged to that store and to a real
`mlflow server` on loopback; an MLflow server that does not answer refused before anything is stored."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.conftest import harness_cli
from tests.servers import free_port

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SECRET = "canary-mlflow-5e2b"
ENV = {"HARNESS_DATA_SOURCE": "fixture"}


def _metric_rows(db: Path, run_id: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT task, metric, value, stderr FROM metrics WHERE run_id = ?", [run_id]).fetchall()
    finally:
        con.close()


def _files_contain(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One harness run, logged to a sqlite MLflow store; the --json file it wrote beside it."""
    tmp = tmp_path_factory.mktemp("mlflow")
    db, store_dir = tmp / "results.duckdb", tmp / "store"
    store_dir.mkdir()
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    proc = harness_cli("run", "--tasks", "hellaswag", "--limit", "3", "--no-progress", "--db", str(db), "--tag", "mlflow-e2e",
                       "--json", str(tmp / "run.json"), "--mlflow-uri", uri, "--mlflow-experiment", "e2e", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "mlflow" not in proc.stderr.lower(), proc.stderr
    summary = json.loads((tmp / "run.json").read_text())
    return {"tmp": tmp, "db": db, "uri": uri, "store_dir": store_dir, "summary": summary, "run_id": summary["run_id"]}


def _mlflow_run(client: MlflowClient, experiment: str, harness_run_id: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`harness.run_id` = '{harness_run_id}'")
    assert len(runs) == 1
    return runs[0]


def test_run_is_logged_as_stored(logged: dict) -> None:
    client = MlflowClient(tracking_uri=logged["uri"])
    run = _mlflow_run(client, "e2e", logged["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == logged["run_id"]
    rows = _metric_rows(logged["db"], logged["run_id"])
    assert rows
    expected = {f"{t}/{m}": v for t, m, v, _ in rows} | {f"{t}/{m}_stderr": s for t, m, _, s in rows if s is not None}
    assert run.data.metrics == pytest.approx(expected)
    params = run.data.params
    assert params["model"] == logged["summary"]["model"] and params["backend"] == "hf"
    assert params["tasks"] == "hellaswag" and params["hellaswag/num_fewshot"] == "0" and params["hellaswag/limit"] == "3"
    assert params["seed"] == "1234" and params["harness_version"]
    tags = run.data.tags
    assert tags["harness.tags"] == "mlflow-e2e" and tags["harness.status"] == "complete"
    assert tags["harness.data_source/hellaswag"].startswith("fixture:") and len(tags["harness.config_hash"]) == 64
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "hellaswag" and tags["harness.dataset_fingerprint/hellaswag"].startswith(dataset.dataset.digest)
    # the JSON artifact is what `--json` wrote; the markdown names the run and every metric
    local = Path(client.download_artifacts(run.info.run_id, "", str(logged["tmp"] / "download")))
    assert json.loads((local / "harness_run.json").read_text()) == logged["summary"]
    md = (local / "summary.md").read_text()
    assert logged["run_id"] in md and all(f"| hellaswag | {m} |" in md for _, m, _, _ in rows)
    # artifacts sit beside the sqlite file, not in the directory the command ran from
    assert list((logged["store_dir"] / "mlruns").rglob("harness_run.json"))


def test_gate_logged_nested_under_the_candidate(logged: dict) -> None:
    policy = logged["tmp"] / "policy.yaml"
    policy.write_text("max_drop: 50\nmin_samples: 1\n")
    proc = harness_cli("gate", "--baseline", logged["run_id"], "--candidate", logged["run_id"], "--policy", str(policy),
                       "--db", str(logged["db"]), "--mlflow-uri", logged["uri"], "--mlflow-experiment", "e2e")
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=logged["uri"])
    candidate = _mlflow_run(client, "e2e", logged["run_id"])
    exp = client.get_experiment_by_name("e2e")
    [gate] = client.search_runs([exp.experiment_id], filter_string="tags.`harness.gate_kind` = 'fixed'")
    assert gate.data.tags["mlflow.parentRunId"] == candidate.info.run_id
    assert gate.data.metrics["gate/passed"] == 1.0 and gate.data.metrics["hellaswag/acc_delta"] == 0.0
    assert gate.data.tags["harness.decision/hellaswag/acc"] == "pass"


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer"
            time.sleep(0.5)
        yield port, tmp_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_gate_to_a_real_server_keeps_no_secret(logged: dict, mlflow_server) -> None:
    port, server_dir = mlflow_server
    policy = logged["tmp"] / "policy-server.yaml"
    policy.write_text("max_drop: 50\nmin_samples: 1\n")
    # the tracking URI carries credentials: used for the request, never stored or printed
    proc = harness_cli("gate", "--baseline", logged["run_id"], "--candidate", logged["run_id"], "--policy", str(policy),
                       "--db", str(logged["db"]), "--mlflow-uri", f"http://harness:{SECRET}@127.0.0.1:{port}")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    exp = client.get_experiment_by_name("harness")
    [gate] = client.search_runs([exp.experiment_id])
    assert gate.data.tags["harness.candidate_run_id"] == logged["run_id"] and "mlflow.parentRunId" not in gate.data.tags
    assert gate.data.params["kind"] == "fixed" and gate.data.metrics["gate/passed"] == 1.0
    assert {a.path for a in client.list_artifacts(gate.info.run_id)} == {"gate.json", "gate.md"}
    local = Path(client.download_artifacts(gate.info.run_id, "gate.json", str(server_dir / "download")))
    stored = json.loads(local.read_text())
    assert {(d["task"], d["metric"], d["status"]) for d in stored["decisions"]} == {("hellaswag", "acc", "pass"),
                                                                                    ("hellaswag", "acc_norm", "pass")}
    assert _files_contain(server_dir, SECRET) == []
    assert _files_contain(logged["store_dir"], SECRET) == [] and _files_contain(logged["tmp"], SECRET) == []


def test_a_server_that_does_not_answer_is_refused_before_the_run(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "results.duckdb"
    started = time.monotonic()
    proc = harness_cli("run", "--tasks", "hellaswag", "--limit", "3", "--no-progress", "--db", str(db),
                       "--mlflow-uri", f"http://127.0.0.1:{port}", env=ENV)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0] and f"127.0.0.1:{port}" in lines[0], proc.stderr
    assert time.monotonic() - started < 60
    assert not db.exists()  # nothing stored: not even the database was created
