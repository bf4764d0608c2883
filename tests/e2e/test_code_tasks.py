"""HumanEval and MBPP through `harness run --model replay:FILE`, executed in the real sandboxes."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from harness.sandbox.bwrap import bwrap_available
from harness.sandbox.docker import docker_available
from harness.scoring.code import pass_at_k
from tests.conftest import REPO, harness_cli, require_or_skip

FIXTURES = REPO / "tasks" / "fixtures"
NO_BWRAP = "bubblewrap is not installed (apt-get install -y bubblewrap)"
# MBPP problems whose reference `code` fails its own test_list under lm-eval's protocol, with why.
MBPP_REFERENCE_FAILS = {
    367: "its asserts use `root`, `root1`, `root2` built by test_setup_code, which lm-eval's mbpp does not run",
}


def humaneval_docs() -> list[dict]:
    with gzip.open(FIXTURES / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def mbpp_test_docs() -> list[dict]:
    rows = [json.loads(line) for line in (FIXTURES / "mbpp" / "mbpp.jsonl").read_text().splitlines()]
    return [r for r in rows if 11 <= r["task_id"] <= 510]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_replay(tmp_path: Path, task: str, replay: Path, *args: str, env: dict | None = None):
    summary = tmp_path / "summary.json"
    db = tmp_path / "results.duckdb"
    env = {"HARNESS_ALLOW_CODE_EVAL": ""} | (env or {})
    proc = harness_cli("run", "--tasks", task, "--model", f"replay:{replay}", "--db", str(db), "--json", str(summary),
                       "--no-progress", *args, env=env)
    return proc, summary, db


def samples(db: Path, task: str) -> list[tuple[int, str, dict, dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT doc_id, extracted, response, metrics FROM samples WHERE task = ? ORDER BY doc_id",
                           [task]).fetchall()
    finally:
        con.close()
    return [(d, e, json.loads(r), json.loads(m)) for d, e, r, m in rows]


def canonical_humaneval(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "canonical.jsonl",
                      [{"task_id": d["task_id"], "completion": d["canonical_solution"]} for d in humaneval_docs()])


def assert_all_humaneval_pass(tmp_path: Path, backend: str) -> None:
    proc, summary, db = run_replay(tmp_path, "humaneval", canonical_humaneval(tmp_path), "--sandbox", backend)
    assert proc.returncode == 0, proc.stderr
    metric = json.loads(summary.read_text())["tasks"]["humaneval"]["pass@1"]
    assert metric["n"] == 164 and metric["value"] == 1.0
    stored = samples(db, "humaneval")
    assert len(stored) == 164
    for _, extracted, response, metrics in stored:
        assert extracted == "passed" and metrics == {"pass@1": 1.0}
        assert [s["status"] for s in response["samples"]] == ["passed"] and response["samples"][0]["error"] == ""


def test_humaneval_canonical_solutions_pass_in_bwrap(tmp_path: Path) -> None:
    require_or_skip(bwrap_available(), "bubblewrap", NO_BWRAP)
    assert_all_humaneval_pass(tmp_path, "bwrap")


def test_humaneval_canonical_solutions_pass_in_docker(tmp_path: Path) -> None:
    require_or_skip(docker_available(), "a Docker daemon", "no Docker daemon answers `docker info`; CI runs one")
    assert_all_humaneval_pass(tmp_path, "docker")


def test_mbpp_canonical_solutions_pass_except_known_reference_failures(tmp_path: Path) -> None:
    require_or_skip(bwrap_available(), "bubblewrap", NO_BWRAP)
    docs = mbpp_test_docs()
    assert len(docs) == 500
    replay = write_rows(tmp_path / "mbpp.jsonl", [{"task_id": d["task_id"], "completion": d["code"]} for d in docs])
    proc, summary, db = run_replay(tmp_path, "mbpp", replay, "--sandbox", "bwrap")
    assert proc.returncode == 0, proc.stderr
    stored = samples(db, "mbpp")
    failing = {docs[doc_id]["task_id"]: response["samples"][0] for doc_id, extracted, response, _ in stored
               if extracted != "passed"}
    assert set(failing) == set(MBPP_REFERENCE_FAILS), {k: v["error"][-200:] for k, v in failing.items()}
    assert all(s["status"] == "failed" for s in failing.values())
    metric = json.loads(summary.read_text())["tasks"]["mbpp"]["pass@1"]
    assert metric["n"] == 500 and metric["value"] == pytest.approx(1 - len(MBPP_REFERENCE_FAILS) / 500)


def test_wrong_and_early_exit_completions_fail(tmp_path: Path) -> None:
    require_or_skip(bwrap_available(), "bubblewrap", NO_BWRAP)
    doc = humaneval_docs()[0]
    completions = [
        "    return False\n",  # wrong
        "    return True\nimport sys\nsys.exit(0)\n",  # exits 0 before check() runs
        "    import os\n    os._exit(0)\n",  # exits 0 from inside check()
        "    raise RuntimeError('boom')\n",  # crashes
        doc["canonical_solution"],
    ]
    replay = write_rows(tmp_path / "mixed.jsonl", [{"task_id": doc["task_id"], "completion": c} for c in completions])
    proc, _, db = run_replay(tmp_path, "humaneval", replay, "--sandbox", "bwrap", "--limit", "1")
    assert proc.returncode == 0, proc.stderr
    [(_, extracted, response, metrics)] = samples(db, "humaneval")
    statuses = [s["status"] for s in response["samples"]]
    assert statuses == ["failed", "failed", "failed", "failed", "passed"]
    assert extracted == "failed"
    assert "RuntimeError: boom" in response["samples"][3]["error"]
    assert metrics["pass@1"] == pytest.approx(0.2)  # 1 - C(4,1)/C(5,1)


def test_no_sandbox_and_local_not_allowed_exits_2(tmp_path: Path) -> None:
    replay = canonical_humaneval(tmp_path)
    proc, _, db = run_replay(tmp_path, "humaneval", replay, "--sandbox", "local", "--limit", "1")
    assert proc.returncode == 2 and "--allow-unsandboxed-code" in proc.stderr and "Traceback" not in proc.stderr
    assert not db.exists()
    # auto with neither a Docker client nor bubblewrap on PATH
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc, _, db = run_replay(tmp_path, "humaneval", replay, "--sandbox", "auto", "--limit", "1", env={"PATH": str(empty)})
    assert proc.returncode == 2 and "no sandbox available" in proc.stderr and "Traceback" not in proc.stderr
    assert not db.exists()


def test_local_sandbox_runs_with_explicit_opt_in(tmp_path: Path) -> None:
    proc, summary, _ = run_replay(tmp_path, "humaneval", canonical_humaneval(tmp_path), "--sandbox", "local",
                                  "--allow-unsandboxed-code", "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(summary.read_text())["tasks"]["humaneval"]["pass@1"]["value"] == 1.0


def test_replay_refuses_loglikelihood_tasks_and_bad_files(tmp_path: Path) -> None:
    replay = canonical_humaneval(tmp_path)
    proc, _, db = run_replay(tmp_path, "hellaswag", replay, "--limit", "2")
    assert proc.returncode == 2 and "cannot answer loglikelihood" in proc.stderr and not db.exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    proc, _, db = run_replay(tmp_path, "humaneval", bad, "--limit", "1")
    assert proc.returncode == 2 and "bad.jsonl:1" in proc.stderr and not db.exists()


def test_replay_fingerprint_is_the_file_hash(tmp_path: Path) -> None:
    from harness.backends.base import parse_model_spec
    from harness.backends.replay import ReplayBackend

    replay = canonical_humaneval(tmp_path)
    backend = ReplayBackend(parse_model_spec(f"replay:{replay}"))
    assert backend.fingerprint() == "replay:" + hashlib.sha256(replay.read_bytes()).hexdigest()
    assert len(backend.completions) == 164 and backend.supports == frozenset({"generate"})


def test_pass_at_k_unbiased_estimator_by_hand() -> None:
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(3, 0, 2) == 0.0 and pass_at_k(3, 2, 2) == 1.0  # n - c < k: every k-subset holds a pass
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_mbpp_prompt_is_lm_eval_three_shot() -> None:
    from harness import tasks as catalog

    task = catalog.get_task("mbpp")
    dataset = task.load()
    instance = task.build(dataset, 1, task.default_fewshot, 1234)[0]
    assert [d["task_id"] for d in dataset.fewshot_docs] == [2, 3, 4]
    first_shot = ("You are an expert Python programmer, and here is your task: Write a function to find the similar "
                  "elements from the given two tuple lists. Your code should pass these tests:\n\n"
                  "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n")
    assert instance.prompt.startswith(first_shot)
    assert instance.prompt.count("[DONE]\n\n") == 3
    assert instance.prompt.endswith("Your code should pass these tests:\n\n" + "\n".join(instance.doc["test_list"])
                                    + "\n[BEGIN]\n")
    assert instance.doc["task_id"] == 11 and instance.requests[0].stop == ("[DONE]",)
