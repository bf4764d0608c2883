"""Publish stored runs to MLflow (the optional `harness[mlflow]` extra): one MLflow run per harness run.

Everything is read back from the DuckDB store after the run is stored, so what MLflow holds equals
what the database holds. Backend arguments pass through the one redactor again (core/redact.py)
and the model spec loses URL credentials, so no secret reaches a tracking server.

Where to log is checked before anything runs (`check_target`): the extra is installed, an http(s)
server answers its /health within a few seconds, any other store opens. A failure while logging
afterwards never undoes the stored run: the caller reports it as a warning, or as exit 2 with
`--mlflow-required` (cli/options.py). mlflow is imported only inside functions: it is optional and
takes seconds to import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.core.redact import redact_args, strip_userinfo
from harness.report import run_summary
from harness.store.db import Store

DEFAULT_EXPERIMENT = "harness"
HEALTH_TIMEOUT_S = 3.0
INSTALL_HINT = "pip install 'harness[mlflow]'"
# MLflow's portable key characters (colons are refused on Windows); anything else becomes "_".
UNSAFE_KEY = re.compile(r"[^\w.\- /]")
MAX_KEY = 250
MAX_PARAM = 6000


@dataclass(frozen=True)
class MlflowTarget:
    """Where to log: uri None is MLflow's own default (MLFLOW_TRACKING_URI, else ./mlflow.db)."""

    uri: str | None
    experiment: str = DEFAULT_EXPERIMENT
    required: bool = False

    @property
    def shown(self) -> str:
        """The URI as it may be printed: credentials in it replaced by a marker."""
        return strip_userinfo(self.uri) if self.uri else "MLflow's default tracking URI"


def resolve_target(enabled: bool, uri: str | None, required: bool, experiment: str | None,
                   env_uri: str | None) -> MlflowTarget | None:
    """The flags as a target, None when MLflow is off. --mlflow-uri and --mlflow-required imply --mlflow;
    --mlflow-uri wins over $MLFLOW_TRACKING_URI."""
    if not (enabled or uri or required):
        if experiment is not None:
            raise UsageError("--mlflow-experiment needs --mlflow or --mlflow-uri URI")
        return None
    if uri is not None and not uri.strip():
        raise UsageError("--mlflow-uri is empty")
    if experiment is not None and not experiment.strip():
        raise UsageError("--mlflow-experiment is empty")
    return MlflowTarget(uri=(uri or env_uri or None), experiment=experiment or DEFAULT_EXPERIMENT, required=required)


def check_installed() -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise UsageError(f"--mlflow needs the mlflow package: {INSTALL_HINT}")


def check_target(target: MlflowTarget) -> None:
    """Before the run: the tracking store answers. An http server gets one short /health request (MLflow's
    own client retries for minutes); any other store is opened and asked for the experiment."""
    check_installed()
    uri = target.uri or load_mlflow().get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_http(uri, target.shown)
        return
    try:
        client(target).get_experiment_by_name(target.experiment)
    except Exception as exc:  # any store error: the user's URI, said in one line
        raise UsageError(f"MLflow tracking URI {target.shown} does not work: {first_line(exc)}") from None


def _check_http(uri: str, shown: str) -> None:
    import httpx

    from harness.core.redact import split_userinfo

    url, credentials = split_userinfo(uri)
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S, auth=credentials)
    except httpx.HTTPError as exc:
        raise UsageError(f"MLflow server {shown} does not answer ({type(exc).__name__}); start it or fix --mlflow-uri") from None
    if response.status_code != 200:
        raise UsageError(f"MLflow server {shown} answered /health with HTTP {response.status_code}: not an MLflow server?")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_mlflow() -> Any:
    """mlflow, imported now, its INFO chatter (table creation, new experiments) kept off stderr, and its
    "View run at URL" lines off stdout: that URL carries the tracking URI's credentials, and stdout is the
    command's own output (the gate's markdown)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def client(target: MlflowTarget) -> Any:
    load_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=target.uri) if target.uri else MlflowClient()


def experiment_id(mlflow_client: Any, target: MlflowTarget) -> str:
    """The experiment, created if missing; beside a sqlite file its artifacts go to `mlruns/` next to it
    (MLflow's default is ./mlruns in whatever directory the command ran from)."""
    found = mlflow_client.get_experiment_by_name(target.experiment)
    if found is not None:
        return str(found.experiment_id)
    location = None
    uri = target.uri or ""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    return str(mlflow_client.create_experiment(target.experiment, artifact_location=location))


# ---- naming ------------------------------------------------------------------------------------


def key(*parts: str) -> str:
    """An MLflow param/metric/tag name: parts joined by '/', unsafe characters replaced, at most 250 long."""
    return UNSAFE_KEY.sub("_", "/".join(p.strip("/") for p in parts))[:MAX_KEY]


def metric_key(task: str, metric: str, suffix: str = "") -> str:
    """`hellaswag/acc_norm`, and `hellaswag/acc_norm_stderr` for its standard error."""
    return key(task, metric + (f"_{suffix}" if suffix else ""))


def finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_PARAM else text[:MAX_PARAM - 3] + "..."


def run_params(run: dict) -> dict[str, str]:
    """What ran: model, backend and its (redacted) args, tasks with shots and limit, seed, suite, version."""
    meta = json.loads(run.get("metadata") or "{}")
    args = redact_args(json.loads(run.get("backend_args") or "{}"))
    task_meta = meta.get("tasks") or {}
    params: dict[str, Any] = {"model": strip_userinfo(str(run["model"])), "backend": run["backend"],
                              "tasks": ",".join(json.loads(run.get("tasks") or "[]")), "seed": run.get("seed"),
                              "suite": run.get("suite"), "harness_version": meta.get("harness_version")}
    params |= {key("backend_args", k): v for k, v in sorted(args.items())}
    for t in run["task_rows"].itertuples():
        params[key(t.task, "num_fewshot")] = t.num_fewshot
        params[key(t.task, "limit")] = (task_meta.get(t.task) or {}).get("limit") or "all"
    return {k: param_value(v) for k, v in params.items() if v is not None and not _is_nan(v)}


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def run_metrics(metrics: Any) -> dict[str, float]:
    """Per task and metric its value and, as its own metric, its stderr (where it has one)."""
    out: dict[str, float] = {}
    for row in metrics.itertuples():
        for suffix, value in (("", row.value), ("stderr", row.stderr)):
            number = finite(value)
            if number is not None:
                out[metric_key(row.task, row.metric, suffix)] = number
    return out


def run_tags(run: dict) -> dict[str, str]:
    """Identity and provenance: the harness run id, config hash, fingerprints, data source per task, tags."""
    tags = {"harness.run_id": run["run_id"], "harness.config_hash": run["config_hash"], "harness.status": run["status"],
            "harness.model_fingerprint": str(run["model_fingerprint"]), "harness.tags": ",".join(run["tags"])}
    for t in run["task_rows"].itertuples():
        tags[key("harness.data_source", t.task)] = strip_userinfo(str(t.data_source))
        tags[key("harness.dataset_fingerprint", t.task)] = str(t.dataset_fingerprint)
    return tags


def _datasets(run: dict) -> list[Any]:
    """One metadata-only MLflow dataset per task (documents are never uploaded): name, fingerprint, source."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for t in run["task_rows"].itertuples():
        source_text = strip_userinfo(str(t.data_source))
        kind, _, where = source_text.partition(":")
        if kind == "hub":
            hub_id, _, revision = where.partition("@")
            source: Any = HuggingFaceDatasetSource(path=hub_id, revision=revision or None)
        else:
            source = CodeDatasetSource({"harness.data_source": source_text})
        dataset = MetaDataset(source, name=t.task, digest=str(t.dataset_fingerprint)[:36])  # type: ignore[abstract]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "evaluation")]))
    return inputs


# ---- logging -----------------------------------------------------------------------------------


def log_batch(mlflow_client: Any, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Params, metrics and tags in batches MLflow accepts (at most 100 params and 1000 items per call)."""
    from mlflow.entities import Metric, Param, RunTag

    now = _now_ms()
    param_items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(param_items), 100):
        mlflow_client.log_batch(run_id, params=param_items[start:start + 100])
    metric_items = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for start in range(0, len(metric_items), 1000):
        mlflow_client.log_batch(run_id, metrics=metric_items[start:start + 1000])
    mlflow_client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_run(target: MlflowTarget, store_path: Path, harness_run_id: str) -> str:
    """The stored run as an MLflow run (its id returned): params, metrics, tags, datasets, JSON and markdown."""
    store = Store(store_path, read_only=True)
    try:
        run = store.run(harness_run_id)
        metrics = store.metrics(harness_run_id)
    finally:
        store.close()
    mlflow_client = client(target)
    created = run["created_at"]
    start = int(created.timestamp() * 1000) if hasattr(created, "timestamp") else None
    mlflow_run = mlflow_client.create_run(experiment_id(mlflow_client, target), start_time=start, run_name=harness_run_id)
    mlflow_id = mlflow_run.info.run_id
    try:
        log_batch(mlflow_client, mlflow_id, run_params(run), run_metrics(metrics), run_tags(run))
        mlflow_client.log_inputs(mlflow_id, datasets=_datasets(run))
        summary = run_summary.summary(harness_run_id, str(run["model"]), metrics.itertuples())
        mlflow_client.log_text(mlflow_id, json.dumps(summary, indent=2), "harness_run.json")
        mlflow_client.log_text(mlflow_id, run_summary.markdown(run, summary), "summary.md")
    except BaseException:
        mlflow_client.set_terminated(mlflow_id, "FAILED")
        raise
    mlflow_client.set_terminated(mlflow_id, "FINISHED" if run["status"] == "complete" else "FAILED")
    return str(mlflow_id)


def find_run(mlflow_client: Any, experiment: str, harness_run_id: str) -> str | None:
    """The latest MLflow run logged for a harness run in this experiment, if any."""
    runs = mlflow_client.search_runs([experiment], filter_string=f"tags.`harness.run_id` = '{harness_run_id}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
    return str(runs[0].info.run_id) if runs else None
