"""The pure parts of MLflow tracking: names, redaction, target resolution, the failure policy; and a recipe's
checkpoints logged as MLflow logged models from a store built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.options import publish_to_mlflow
from harness.core.errors import UsageError
from harness.report import mlflow_tracking as mt
from harness.report.mlflow_models import edge_metrics, gate_metrics


def _run(**over) -> dict:
    run = {"run_id": "20260101-000000-abcdef", "model": "openai:m@http://user:pw-secret@host/v1", "backend": "openai",
           "backend_args": json.dumps({"api_key": "sk-live-secret", "body.authorization": "Bearer tok-secret", "concurrency": "4"}),
           "tasks": json.dumps(["hellaswag", "mmlu_anatomy"]), "seed": 7, "suite": None, "status": "complete",
           "config_hash": "c" * 64, "model_fingerprint": "f" * 64, "tags": ["main", "nightly"],
           "metadata": json.dumps({"harness_version": "0.1.0", "tasks": {"hellaswag": {"limit": 5}, "mmlu_anatomy": {"limit": None}}}),
           "task_rows": pd.DataFrame({"task": ["hellaswag", "mmlu_anatomy"], "num_fewshot": [0, 5],
                                      "data_source": ["fixture:/x", "hub:cais/mmlu@abc"], "dataset_fingerprint": ["d1", "d2"]})}
    return run | over


def test_params_redact_backend_args_and_url_credentials() -> None:
    params = mt.run_params(_run())
    text = json.dumps(params)
    assert "secret" not in text
    assert params["backend_args/api_key"] == "***" and params["backend_args/body.authorization"] == "***"
    assert params["backend_args/concurrency"] == "4"
    assert params["model"] == "openai:m@http://***@host/v1"
    assert params["hellaswag/num_fewshot"] == "0" and params["mmlu_anatomy/num_fewshot"] == "5"
    assert params["hellaswag/limit"] == "5" and params["mmlu_anatomy/limit"] == "all"
    assert params["tasks"] == "hellaswag,mmlu_anatomy" and params["seed"] == "7" and "suite" not in params


def test_metrics_value_and_stderr_with_safe_names() -> None:
    frame = pd.DataFrame({"task": ["hellaswag", "bbh:date"], "metric": ["acc_norm", "exact match@1"],
                          "value": [0.5, 0.25], "stderr": [0.1, float("nan")]})
    assert mt.run_metrics(frame) == {"hellaswag/acc_norm": 0.5, "hellaswag/acc_norm_stderr": 0.1, "bbh_date/exact match_1": 0.25}


def test_keys_are_valid_mlflow_names() -> None:
    from mlflow.utils.validation import _validate_metric_name

    for name in (mt.metric_key("a:b", "c(d)", "stderr"), mt.key("x" * 400), mt.key("harness.decision", "t", "m")):
        _validate_metric_name(name)
    assert len(mt.key("x" * 400)) == 250


def test_tags_carry_identity_and_data_sources() -> None:
    tags = mt.run_tags(_run())
    assert tags["harness.run_id"] == "20260101-000000-abcdef" and tags["harness.tags"] == "main,nightly"
    assert tags["harness.data_source/mmlu_anatomy"] == "hub:cais/mmlu@abc" and tags["harness.config_hash"] == "c" * 64


def test_resolve_target() -> None:
    assert mt.resolve_target(False, None, False, None, "http://env:5000") is None
    assert mt.resolve_target(True, None, False, None, "http://env:5000") == mt.MlflowTarget("http://env:5000")
    assert mt.resolve_target(True, None, False, None, None) == mt.MlflowTarget(None)
    # --mlflow-uri wins over the environment and implies --mlflow; so does --mlflow-required
    assert mt.resolve_target(False, "sqlite:///m.db", False, "exp", "http://env:5000") == mt.MlflowTarget("sqlite:///m.db", "exp")
    assert mt.resolve_target(False, None, True, None, None) == mt.MlflowTarget(None, required=True)
    with pytest.raises(UsageError, match="--mlflow-experiment needs"):
        mt.resolve_target(False, None, False, "exp", None)
    with pytest.raises(UsageError, match="empty"):
        mt.resolve_target(False, " ", False, None, None)
    assert mt.MlflowTarget("http://u:pw@h:5000").shown == "http://***@h:5000"


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'harness\[mlflow\]'"):
        mt.check_installed()


def test_failure_policy(capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> None:
        raise ConnectionError("refused by http://u:pw-secret@h:5000\nsecond line")

    publish_to_mlflow(mt.MlflowTarget("http://h:5000"), "run R", broken)  # not required: a warning, no exception
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness: warning: MLflow logging of run R") and "pw-secret" not in err
    with pytest.raises(UsageError, match="--mlflow-required; the results are stored"):
        publish_to_mlflow(mt.MlflowTarget("http://h:5000", required=True), "run R", broken)
    publish_to_mlflow(None, "run R", broken)  # MLflow off: nothing is called


def test_gate_and_edge_metrics() -> None:
    decisions = [{"task": "hellaswag", "metric": "acc", "status": "fail", "delta": -0.1, "ci_low": -0.2, "ci_high": float("nan"),
                  "p_value": 0.01, "p_adjusted": 0.02, "tolerance": 0.01}]
    out = gate_metrics({"passed": False}, decisions)
    assert out["gate/passed"] == 0.0 and out["hellaswag/acc_passed"] == 0.0 and out["hellaswag/acc_delta"] == -0.1
    assert "hellaswag/acc_ci_high" not in out
    report = {"gate": {"passed": True}, "fidelity": {"kld_mean": 0.02}, "size": {"child_bits_per_weight": 4.5},
              "comparison": {"metrics": [{"metric": "acc", "delta": -0.01}]}}
    assert edge_metrics(report) == {"accuracy_delta_points": pytest.approx(-1.0), "kld_mean": 0.02, "bits_per_weight": 4.5,
                                    "gate_passed": 1.0}


def test_recipe_checkpoints_become_linked_logged_models(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from harness.report.mlflow_models import log_recipe
    from harness.store import lineage
    from harness.store.artifacts import Artifact
    from harness.store.db import Store

    parent_id, child_id = "a" * 64, "b" * 64
    store = Store(tmp_path / "results.duckdb")
    try:
        for artifact_id, fmt in ((parent_id, "hf"), (child_id, "gguf")):
            lineage.register_artifact(store, Artifact(artifact_id, tmp_path / artifact_id, fmt, 1000, 135, 4.5), "fp")
        lineage.add_edge(store, lineage.Edge(child=child_id, parent=parent_id, relation="quantized", recipe_id="r1",
                                             step="q4", step_kind="quantize_gguf", params={"type": "Q4_0"}, seed=1))
        lineage.save_edge_report(store, child_id, parent_id, "r1", {"gate": {"passed": False}, "fidelity": {"kld_mean": 0.3}})
    finally:
        store.close()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    models = log_recipe(mt.MlflowTarget(uri), tmp_path / "results.duckdb", "r1", [(parent_id, child_id)],
                        {parent_id: "parent", child_id: "q4"})
    client = MlflowClient(tracking_uri=uri)
    child = client.get_logged_model(models[child_id])
    parent = client.get_logged_model(models[parent_id])
    assert child.tags["harness.parent_model_id"] == parent.model_id and child.tags["harness.parent_artifact_id"] == parent_id
    assert child.params["relation"] == "quantized" and child.params["step_params/type"] == "Q4_0"
    assert child.params["format"] == "gguf" and parent.params["format"] == "hf" and "harness.parent_model_id" not in parent.tags
    assert child.source_run_id == parent.source_run_id
    metrics = {m.key: m.value for m in child.metrics or []}
    assert metrics == {"q4/kld_mean": 0.3, "q4/gate_passed": 0.0}
    recipe_run = client.get_run(child.source_run_id)
    assert recipe_run.data.tags["harness.recipe_id"] == "r1" and recipe_run.info.status == "FINISHED"
