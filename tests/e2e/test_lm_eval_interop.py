"""Real lm-eval 0.4.13 output in, harness output in lm-eval's layout out (issue 17, parts 1 and 2).

lm-eval's own CLI runs HellaSwag with --log_samples on harness's fixture documents (an include-path
YAML that includes lm-eval's hellaswag.yaml and reads the fixture file as `dataset_path: json`) on
the embedded model; harness runs the same model and documents once, with --output-path. Then:
the import equals lm-eval's numbers, the gate pairs every document with no flip and passes, and
harness's files read back (through lm-eval's table code and the importer) as the same run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import lm_eval
import pytest
from lm_eval import utils as lm_utils

from harness.taskkit.data import FIXTURE_DIR
from tests.conftest import harness_cli
from tests.e2e.test_run_e2e import FIXTURE_ENV

pytestmark = pytest.mark.slow
N_DOCS = 30  # the gate tests a task with at least 20 paired documents
TABLE_ROW = re.compile(r"^\|(?P<task>[^|]*)\|[^|]*\|(?P<filter>[^|]*)\|[^|]*\|(?P<metric>[^|]*)\|[^|]*\|(?P<value>[^|]*)\|")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from harness.backends.embedded import ensure_hf_dir

    tmp = tmp_path_factory.mktemp("lmeval")
    include = tmp / "tasks"
    include.mkdir()
    fixture = FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl"
    (include / "hellaswag_fixture.yaml").write_text(
        f"include: {Path(lm_eval.__file__).parent / 'tasks' / 'hellaswag' / 'hellaswag.yaml'}\n"
        "task: hellaswag\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {fixture}\n    validation: {fixture}\n")
    lm_out = tmp / "lm_eval_out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    printed = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={ensure_hf_dir()},dtype=float32",
         "--tasks", "hellaswag", "--include_path", str(include), "--limit", str(N_DOCS), "--batch_size", "8",
         "--device", "cpu", "--log_samples", "--output_path", str(lm_out)],
        capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    db = tmp / "r.duckdb"
    ours = tmp / "harness_out"
    run = harness_cli("run", "--tasks", "hellaswag", "--limit", str(N_DOCS), "--db", str(db), "--tag", "cand",
                      "--no-progress", "--output-path", str(ours), "--json", str(tmp / "run.json"), env=FIXTURE_ENV)
    assert run.returncode == 0, run.stderr
    return {"tmp": tmp, "db": db, "lm_out": lm_out, "printed": printed, "ours": ours,
            "run_id": json.loads((tmp / "run.json").read_text())["run_id"]}


def _import(outputs, directory: Path) -> tuple[str, str, str]:
    result = harness_cli("import-lm-eval", str(directory), "--db", str(outputs["db"]))
    assert result.returncode == 0, result.stderr
    match = re.search(r"run (\S+) \((\d+) tasks, (\d+) samples\) tag (\S+): (.*)$", result.stdout.strip().splitlines()[-1])
    assert match, result.stdout
    return match[1], match[4], match[5]


def _results(directory: Path) -> dict:
    return json.loads(next(directory.glob("*/results_*.json")).read_text())


def _samples(directory: Path) -> list[dict]:
    path = next(directory.glob("*/samples_hellaswag_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metrics(db: Path, run_id: str) -> dict[str, float]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute("SELECT metric, value FROM metrics WHERE run_id = ? AND task = 'hellaswag'", [run_id]).fetchall())
    finally:
        con.close()


def _compare(outputs, a: str, b: str) -> dict:
    path = outputs["tmp"] / f"cmp-{a}-{b}.json"
    result = harness_cli("compare", a, b, "--db", str(outputs["db"]), "--json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(path.read_text())


def test_import_equals_lm_evals_printed_numbers_and_the_gate_pairs_every_document(outputs):
    run_id, tag, state = _import(outputs, outputs["lm_out"])
    assert state == "imported" and tag.startswith("lm-eval:") and "@" in tag
    printed = {m["metric"].strip(): m["value"].strip() for m in map(TABLE_ROW.match, outputs["printed"].splitlines())
               if m and m["metric"].strip() in ("acc", "acc_norm")}
    theirs = _results(outputs["lm_out"])["results"]["hellaswag"]
    imported = _metrics(outputs["db"], run_id)
    assert set(printed) == {"acc", "acc_norm"}
    for metric in ("acc", "acc_norm"):
        assert imported[metric] == theirs[f"{metric},none"]
        assert f"{imported[metric]:.4f}".rstrip("0").rstrip(".") == printed[metric].rstrip("0").rstrip(".")
    comparison = _compare(outputs, run_id, outputs["run_id"])
    assert comparison["flips"] == []
    assert {m["metric"]: m["n_paired"] for m in comparison["metrics"]} == {"acc": N_DOCS, "acc_norm": N_DOCS}
    assert any("paired on their prompt hashes" in w for w in comparison["warnings"])
    gate = harness_cli("gate", "--baseline", tag, "--candidate", "cand", "--db", str(outputs["db"]))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert _import(outputs, outputs["lm_out"])[2] == "already imported, unchanged"


def test_output_path_is_lm_evals_layout_and_keys(outputs):
    theirs, ours = _results(outputs["lm_out"]), _results(outputs["ours"])
    folder = next(outputs["ours"].iterdir())
    files = [str(p) for p in folder.iterdir()]
    assert len(lm_utils.get_results_filenames(files)) == 1 and len(lm_utils.get_sample_results_filenames(files)) == 1
    assert lm_utils.get_file_task_name(Path(lm_utils.get_sample_results_filenames(files)[0]).name) == "hellaswag"
    readers_keys = {"results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                    "config", "git_hash", "date", "task_hashes", "model_source", "model_name", "model_name_sanitized"}
    assert readers_keys - set(theirs) <= {"groups"} and readers_keys <= set(ours)
    assert ours["results"]["hellaswag"].keys() == theirs["results"]["hellaswag"].keys()
    assert ours["n-shot"] == theirs["n-shot"] and ours["higher_is_better"] == theirs["higher_is_better"]
    assert ours["n-samples"]["hellaswag"]["effective"] == theirs["n-samples"]["hellaswag"]["effective"] == N_DOCS
    table = lm_utils.make_table(ours)
    assert re.search(r"\|hellaswag\|\s*1\|none\s*\|\s*0\|acc\s*\|", table), table
    their_lines, our_lines = _samples(outputs["lm_out"]), _samples(outputs["ours"])
    assert [set(line) for line in our_lines] == [set(line) for line in their_lines]
    assert [line["prompt_hash"] for line in our_lines] == [line["prompt_hash"] for line in their_lines]
    assert [(line["acc"], line["acc_norm"]) for line in our_lines] == [(line["acc"], line["acc_norm"]) for line in their_lines]


def test_round_trip_gives_the_same_run(outputs):
    run_id, _, _ = _import(outputs, outputs["ours"])
    assert _metrics(outputs["db"], run_id) == _metrics(outputs["db"], outputs["run_id"])
    comparison = _compare(outputs, outputs["run_id"], run_id)
    assert comparison["flips"] == []
    assert all(m["n_paired"] == N_DOCS and m["delta"] == 0 for m in comparison["metrics"])
    con = duckdb.connect(str(outputs["db"]), read_only=True)
    try:
        sql = "SELECT prompt_hash, metrics::VARCHAR FROM samples WHERE run_id = ? ORDER BY doc_id"
        assert con.execute(sql, [run_id]).fetchall() == con.execute(sql, [outputs["run_id"]]).fetchall()
    finally:
        con.close()


def test_bad_output_path_is_refused_before_the_run(outputs):
    target = outputs["tmp"] / "a_file"
    target.write_text("x")
    result = harness_cli("run", "--tasks", "hellaswag", "--limit", "2", "--db", str(outputs["tmp"] / "new.duckdb"),
                         "--output-path", str(target), env=FIXTURE_ENV)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "--output-path" in result.stderr and not (outputs["tmp"] / "new.duckdb").exists()
