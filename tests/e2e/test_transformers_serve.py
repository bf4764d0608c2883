"""Hugging Face `transformers serve` as a second real serving stack behind the `openai` backend.

One server per module on loopback serves the embedded SmolLM2's converted directory, loaded on
demand by path. What it answers (transformers 5.23), which these tests pin down:
- `/v1/models` lists the Hugging Face hub cache, never a directory loaded by path: empty here
  (HF_HUB_CACHE is an empty folder), and HTTP 500 where that cache folder does not exist.
- a completion reports `"model": "<directory>@main"`; a model name it cannot load is HTTP 500
  "Internal Server Error" (not 404), on every attempt.
- `/v1/completions` accepts `echo` and `logprobs` but ignores them: no logprobs block, no echoed
  prompt; `max_tokens: 0` is HTTP 500. So loglikelihood tasks are refused before the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from harness.backends.base import ModelSpec
from harness.backends.embedded import ensure_hf_dir
from harness.backends.openai.backend import OpenAIBackend
from harness.core.errors import UsageError
from tests.conftest import REPO, harness_cli
from tests.servers import ServerProcess, free_port

# The `transformers` console script of this Python's environment, whichever venv runs the tests.
TRANSFORMERS_CLI = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())"]
STARTUP_TIMEOUT_S = 120.0
ADVISORY = "the listing is advisory"


def start_transformers_serve(log_dir: Path, hub_cache: Path) -> ServerProcess:
    """`transformers serve` on a free loopback port, ready once /health answers 200."""
    port = free_port()
    log_path = log_dir / f"transformers-serve-{port}.log"
    env = dict(os.environ) | {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    argv = [*TRANSFORMERS_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    server = ServerProcess("transformers serve", process, port, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"{server.root_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"transformers serve did not answer /health within {STARTUP_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(ensure_hf_dir())


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("transformers_serve")
    (root / "hub").mkdir()
    server = start_transformers_serve(root, root / "hub")
    yield server
    server.stop()


def _stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _run(spec: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"HARNESS_DATA_SOURCE": "fixture", "HARNESS_DB": str(tmp_path / "r.duckdb")}
    return harness_cli("run", "--model", spec, *args, "--no-progress", env=env, timeout=300)


def test_generate_run_goes_ahead_on_an_unlisted_model(serve: ServerProcess, model_dir: str, tmp_path: Path) -> None:
    assert httpx.get(f"{serve.base_url}/models").json()["data"] == []  # what makes the listing advisory here
    out = tmp_path / "out.json"
    result = _run(f"openai:{model_dir}@{serve.base_url}", tmp_path, "--model-args", "body.max_tokens=32",
                  "--tasks", "gsm8k", "--num-fewshot", "0", "--limit", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in _stderr_lines(result) if ADVISORY in line]
    assert len(warnings) == 1 and warnings[0].startswith("harness: WARNING: openai:") and "(it lists: none)" in warnings[0]
    assert f"'{model_dir}@main'" in warnings[0]  # the model the server reported
    run_id = json.loads(out.read_text())["run_id"]
    con = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True)
    samples = con.execute("SELECT count(*), count(DISTINCT doc_id) FROM samples WHERE run_id = ? AND task = 'gsm8k'",
                          [run_id]).fetchone()
    status, meta = con.execute("SELECT status, metadata FROM runs WHERE run_id = ?", [run_id]).fetchone()
    con.close()
    assert samples == (2, 2) and status == "complete"
    assert json.loads(meta)["backend"]["server_model"] == {"reported_model": f"{model_dir}@main"}


def test_fingerprint_is_name_url_and_reported_model(serve: ServerProcess, model_dir: str) -> None:
    first = OpenAIBackend(ModelSpec("openai", f"{model_dir}@{serve.base_url}", {}))
    first.check({"generate"})
    assert first.server_info() == {"reported_model": f"{model_dir}@main"}
    again = OpenAIBackend(ModelSpec("openai", f"{model_dir}@{serve.base_url}", {}))
    elsewhere = OpenAIBackend(ModelSpec("openai", f"{model_dir}@{serve.base_url.replace('127.0.0.1', 'localhost')}", {}))
    assert first.fingerprint() == again.fingerprint() != elsewhere.fingerprint()


def test_bench_against_the_same_server(serve: ServerProcess, model_dir: str, tmp_path: Path) -> None:
    db, out = tmp_path / "b.duckdb", tmp_path / "bench.json"
    result = harness_cli("bench", "--no-progress", "--endpoint", serve.base_url, "--model-name", model_dir,
                         "--num-prompts", "2", "--input-len", "8", "--output-len", "8", "--json", str(out), "--db", str(db),
                         timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [level] = json.loads(out.read_text())["levels"]
    assert level["completed"] == 2 and level["failed"] == 0 and level["ttft_ms"]["mean"] > 0
    con = duckdb.connect(str(db), read_only=True)
    status = con.execute("SELECT status FROM bench_runs").fetchone()[0]
    measured = con.execute("SELECT count(*), sum(output_tokens) FROM bench_requests WHERE NOT warmup AND error IS NULL").fetchone()
    con.close()
    assert status == "complete" and measured[0] == 2 and measured[1] > 0


def test_echo_logprobs_are_absent_so_loglikelihood_tasks_are_refused(serve: ServerProcess, model_dir: str,
                                                                      tmp_path: Path) -> None:
    asked = {"model": model_dir, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0,
             "echo": True, "logprobs": 1}
    [choice] = httpx.post(f"{serve.base_url}/completions", json=asked, timeout=60).json()["choices"]
    assert "logprobs" not in choice and not choice["text"].startswith("The capital")  # ignored, not echoed
    started = time.monotonic()
    result = _run(f"openai:{model_dir}@{serve.base_url}", tmp_path, "--tasks", "hellaswag", "--limit", "1")
    assert result.returncode == 2 and not (tmp_path / "r.duckdb").exists()
    errors = [line for line in _stderr_lines(result) if not line.startswith("harness: WARNING:")]
    assert len(errors) == 1 and errors[0].startswith("harness: error: openai:"), result.stderr
    assert "answers without logprobs" in errors[0] and "probe=off" not in errors[0]
    assert time.monotonic() - started < 30  # refused at once, not after the full retry schedule


def test_nonexistent_model_is_one_line_naming_it(serve: ServerProcess, tmp_path: Path) -> None:
    started = time.monotonic()
    result = _run(f"openai:no-such-org/no-such-model@{serve.base_url}", tmp_path, "--tasks", "gsm8k", "--limit", "1")
    assert result.returncode == 2 and not (tmp_path / "r.duckdb").exists()
    lines = _stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("harness: error: openai:"), result.stderr
    assert "'no-such-org/no-such-model'" in lines[0] and "HTTP 500" in lines[0] and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # quick retries, not the full schedule


def test_a_failing_listing_is_advisory_too(tmp_path_factory: pytest.TempPathFactory, model_dir: str) -> None:
    """Without a hub cache folder transformers serve answers 500 to /v1/models; the run still goes ahead."""
    root = tmp_path_factory.mktemp("transformers_serve_no_cache")
    server = start_transformers_serve(root, root / "missing-hub-cache")
    try:
        assert httpx.get(f"{server.base_url}/models").status_code == 500
        backend = OpenAIBackend(ModelSpec("openai", f"{model_dir}@{server.base_url}", {}))
        backend.check({"generate"})
        assert backend.server_info() == {"reported_model": f"{model_dir}@main"}
        with pytest.raises(UsageError, match="does not list model 'nope'.*HTTP 500"):
            OpenAIBackend(ModelSpec("openai", f"nope@{server.base_url}", {})).check({"generate"})
    finally:
        server.stop()
