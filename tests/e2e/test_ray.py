"""`--executor ray` on real Ray clusters: same numbers as a serial run, lost workers, a killed driver, an address.

Each `harness run` here starts a fresh local Ray cluster of its own (2 workers x 1 thread on the
embedded model, fixture documents); the address test starts a real `ray start --head` on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, harness_cli
from tests.e2e.test_run_e2e import FIXTURE_ENV

pytestmark = pytest.mark.slow
TASKS = "hellaswag,mmlu_anatomy"
ONE_THREAD = {**FIXTURE_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RAY = str(Path(sys.executable).with_name("ray"))


def _samples(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT task, doc_hash, prompt_hash, metrics::VARCHAR, loglikelihoods FROM samples "
                           "ORDER BY task, doc_hash, prompt_hash").fetchall()
    finally:
        con.close()


def _metrics(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT task, metric, value, n FROM metrics ORDER BY task, metric").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("serial") / "serial.duckdb"
    done = harness_cli("run", "--tasks", TASKS, "--limit", "10", "--db", str(db), "--no-progress", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    return db


def test_two_workers_give_the_serial_numbers(serial, tmp_path):
    db = tmp_path / "ray.duckdb"
    # RAY_ADDRESS names a cluster that does not exist: a run without --ray-address must start its own, not attach
    done = harness_cli("run", "--tasks", TASKS, "--limit", "10", "--db", str(db), "--no-progress", "--executor", "ray",
                       "--workers", "2", "--worker-cpus", "1", env={**FIXTURE_ENV, "RAY_ADDRESS": f"127.0.0.1:{_free_port()}"})
    assert done.returncode == 0, done.stderr
    ours, reference = _samples(db), _samples(serial)
    assert len(ours) == len(reference) == 20
    for a, b in zip(ours, reference):
        assert a[:4] == b[:4]  # same document, prompt, per-sample correctness
        assert max(abs(x - y) for x, y in zip(a[4], b[4])) < 1e-4  # the hf backend's batch-invariance tolerance
    assert [(t, m, round(v, 12), n) for t, m, v, n in _metrics(db)] == \
        [(t, m, round(v, 12), n) for t, m, v, n in _metrics(serial)]
    con = duckdb.connect(str(db), read_only=True)
    meta = json.loads(con.execute("SELECT metadata::VARCHAR FROM runs").fetchone()[0])
    con.close()
    assert meta["backend"]["executor"] == {"kind": "ray", "workers": 2, "worker_cpus": 1.0, "worker_gpus": 0.0,
                                           "address": "local"}


def _replica_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::Replica" in line]


def _start(db: Path, limit: int = 50) -> subprocess.Popen:
    env = {**os.environ, **FIXTURE_ENV}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "--tasks", "hellaswag", "--limit", str(limit),
                             "--db", str(db), "--no-progress", "--executor", "ray", "--workers", "2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_work(proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until a replica is answering a batch (Ray titles the process ray::Replica.answer), plus a little."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
        if "ray::Replica.answer" in out:
            time.sleep(2)
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no replica started answering")


def _distinct(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*), count(DISTINCT (task, doc_id)) FROM samples").fetchone()
    finally:
        con.close()


def test_a_killed_worker_loses_no_sample(tmp_path):
    db = tmp_path / "kill.duckdb"
    proc = _start(db)
    _wait_for_work(proc)
    victims = _replica_pids()
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "died" in err  # the batch it held was dealt out again
    assert _distinct(db) == (50, 50)


def test_a_killed_driver_resumes(tmp_path):
    db = tmp_path / "driver.duckdb"
    proc = _start(db)
    _wait_for_work(proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
    proc.communicate()
    done = harness_cli("run", "--tasks", "hellaswag", "--limit", "50", "--db", str(db), "--no-progress",
                       "--executor", "ray", "--workers", "2", env=FIXTURE_ENV)
    assert done.returncode == 0, done.stderr
    assert "(resumed)" in done.stdout
    assert _distinct(db) == (50, 50)


@pytest.mark.parametrize("executor", [["--executor", "ray"], []])
def test_several_models_one_run_each(tmp_path, executor):
    from harness.backends.embedded import ensure_hf_dir
    from tests.e2e.test_run_e2e import _degraded_copy

    sibling = _degraded_copy(ensure_hf_dir(), tmp_path / "bf16")
    db, out = tmp_path / "two.duckdb", tmp_path / "two.json"
    models = ["hf:smollm2-135m-instruct", f"hf:{sibling}"]
    done = harness_cli("run", "--model", models[0], "--model", models[1], "--tasks", "hellaswag", "--limit", "4",
                       "--db", str(db), "--json", str(out), "--tag", "pair", *executor, env=FIXTURE_ENV)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert [s["model"] for s in summary] == models and len({s["run_id"] for s in summary}) == 2
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT r.model, r.status, count(s.doc_id) FROM runs r JOIN run_tags t USING (run_id) "
                       "JOIN samples s USING (run_id) WHERE t.tag = 'pair' GROUP BY r.model, r.status ORDER BY 1").fetchall()
    con.close()
    assert rows == sorted((m, "complete", 4) for m in models)
    if executor:  # the worst exit code: a model that cannot load fails alone, the other is stored
        bad = harness_cli("run", "--model", models[0], "--model", f"hf:{tmp_path / 'missing'}", "--tasks", "hellaswag",
                          "--limit", "4", "--db", str(tmp_path / "bad.duckdb"), *executor, env=FIXTURE_ENV)
        assert bad.returncode == 2 and "missing" in bad.stderr, bad.stderr
        assert "run " in bad.stdout  # the first model's run finished and was reported


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    port, client = _free_port(), _free_port()
    temp = Path("/tmp") / f"ray-head-{os.getpid()}"  # Ray's socket paths must stay short
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--ray-client-server-port", str(client), "--num-cpus", "2", "--include-dashboard",
                              "false", "--disable-usage-stats", "--temp-dir", str(temp)],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield port, client, temp
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _client_server_logs(temp: Path) -> str:
    """The head's Ray Client proxy and per-client server logs: what a ray:// failure says on the head."""
    logs = sorted((temp / "session_latest" / "logs").glob("ray_client_server*.err"))
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]) for log in logs)


def test_connect_by_address(head, tmp_path):
    port, client, temp = head
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{client}"):
        db = tmp_path / f"{address.split(':')[0]}.duckdb"
        done = harness_cli("run", "--tasks", "hellaswag", "--limit", "4", "--db", str(db), "--no-progress",
                           "--executor", "ray", "--ray-address", address, env={**FIXTURE_ENV, "RAY_ADDRESS": ""})
        assert done.returncode == 0, f"{address}: {done.stderr}\n{_client_server_logs(temp)}"
        assert _distinct(db) == (4, 4)


def test_bad_input_is_one_line(tmp_path):
    from harness.backends.embedded import ensure_hf_dir

    broken = tmp_path / "broken-weights"
    shutil.copytree(ensure_hf_dir(), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    fake_ray = tmp_path / "noray"
    (fake_ray / "ray").mkdir(parents=True)
    (fake_ray / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    db = tmp_path / "never.duckdb"
    cases = [
        (["--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}"], {}, "cannot connect to the Ray cluster"),
        (["--executor", "ray", "--workers", "3"], {"HARNESS_RAY_START_TIMEOUT_S": "15"}, "could not be placed"),
        (["--executor", "ray", "--model", f"hf:{broken}"], {}, "could not load the model"),
        (["--executor", "ray"], {"PYTHONPATH": str(fake_ray)}, "pip install 'harness[ray]'"),
        (["--workers", "2"], {}, "need --executor ray"),
    ]
    for args, env, message in cases:
        done = harness_cli("run", "--tasks", "hellaswag", "--limit", "2", "--db", str(db), "--no-progress", *args,
                           env={**FIXTURE_ENV, **env}, timeout=300)
        assert done.returncode == 2, f"{args}: {done.stdout}{done.stderr}"
        lines = [line for line in done.stderr.splitlines() if line.startswith("harness: error")]
        assert len(lines) == 1 and message in lines[0], f"{args}: {done.stderr}"
        assert not db.exists(), args  # found before anything is stored
