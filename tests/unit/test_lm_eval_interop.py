"""lm-eval 0.4 output in and out, on real lm-eval output (tests/fixtures_lm_eval) and without a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from lm_eval import utils as lm_utils

from harness.core.errors import UsageError
from harness.decisions.compare import compare_runs
from harness.interop import lm_eval_format as fmt
from harness.interop.lm_eval_in import import_dir
from harness.interop.lm_eval_out import write_run
from harness.store.db import Store

FIXTURE = Path(__file__).parents[1] / "fixtures_lm_eval" / "gsm8k"
MODEL_DIR = next(FIXTURE.iterdir())
RESULTS = next(MODEL_DIR.glob("results_*.json"))
SAMPLES = next(MODEL_DIR.glob("samples_*.jsonl"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ported_helpers_equal_lm_evals():
    for name in ("HuggingFaceTB/SmolLM2-135M", "/root/x:y|z?*[1]", 'a"b<c>d\\e', "plain"):
        assert fmt.sanitize_model_name(name) == lm_utils.sanitize_model_name(name)
    assert fmt.hash_string("héllo") == lm_utils.hash_string("héllo")
    assert fmt.file_datetime(SAMPLES.name) == lm_utils.get_file_datetime(SAMPLES.name)
    assert fmt.file_datetime(RESULTS.name) + ".json" == lm_utils.get_file_datetime(RESULTS.name)
    assert fmt.file_task_name(SAMPLES.name) == lm_utils.get_file_task_name(SAMPLES.name) == "gsm8k"
    for row in _lines(SAMPLES):  # lm-eval's own document hash, recomputed from the document it wrote
        assert fmt.doc_hash(row["doc"]) == row["doc_hash"]
        assert fmt.hash_string(row["arguments"]["gen_args_0"]["arg_0"]) == row["prompt_hash"]
        assert fmt.hash_string(str(row["target"])) == row["target_hash"]


def test_metric_names_map_one_to_one():
    assert fmt.split_key("acc,none") == ("acc", "none")
    assert fmt.our_metric("acc", "none") == "acc"
    assert fmt.our_metric("exact_match", "strict-match") == "exact_match,strict-match"
    assert fmt.lm_eval_key("acc") == "acc,none"
    assert fmt.lm_eval_key("exact_match,flexible-extract", stderr=True) == "exact_match_stderr,flexible-extract"


@pytest.fixture()
def imported(tmp_path):
    db = tmp_path / "r.duckdb"
    [item] = import_dir(db, FIXTURE)
    return db, item


def test_import_keeps_lm_evals_numbers_hashes_and_metadata(imported):
    db, item = imported
    results = json.loads(RESULTS.read_text())
    assert item.new and item.samples == 2 and item.tag == f"lm-eval:{MODEL_DIR.name}@{RESULTS.stem.split('_', 1)[1].split('.')[0]}"
    con = duckdb.connect(str(db), read_only=True)
    try:
        metrics = {(t, m): (v, s, n) for t, m, v, s, n in
                   con.execute("SELECT task, metric, value, stderr, n FROM metrics WHERE run_id = ?", [item.run_id]).fetchall()}
        block = results["results"]["gsm8k"]
        for name in ("exact_match,strict-match", "exact_match,flexible-extract"):
            metric, filt = name.split(",")
            assert metrics[("gsm8k", name)] == (block[name], block[f"{metric}_stderr,{filt}"], 2)
        rows = con.execute("SELECT doc_id, doc_hash, prompt_hash, target_hash, extracted, metrics::VARCHAR, response::VARCHAR "
                           "FROM samples WHERE run_id = ? ORDER BY doc_id", [item.run_id]).fetchall()
        meta = json.loads(con.execute("SELECT metadata FROM runs WHERE run_id = ?", [item.run_id]).fetchone()[0])
        tags = {t for (t,) in con.execute("SELECT tag FROM run_tags WHERE run_id = ?", [item.run_id]).fetchall()}
        shots = con.execute("SELECT num_fewshot, task_version FROM run_tasks WHERE run_id = ?", [item.run_id]).fetchone()
    finally:
        con.close()
    by_doc: dict[int, dict[str, dict]] = {}
    for line in _lines(SAMPLES):
        by_doc.setdefault(line["doc_id"], {})[line["filter"]] = line
    assert [r[0] for r in rows] == sorted(by_doc)
    for doc_id, doc_hash, prompt_hash, target_hash, extracted, per_sample, response in rows:
        lines = by_doc[doc_id]
        first = next(iter(lines.values()))
        assert (doc_hash, prompt_hash, target_hash) == (first["doc_hash"], first["prompt_hash"], first["target_hash"])
        assert json.loads(per_sample) == {f"exact_match,{f}": line["exact_match"] for f, line in lines.items()}
        assert json.loads(extracted) == {f: line["filtered_resps"][0] for f, line in lines.items()}
        assert json.loads(response) == first["resps"]
    assert meta["hashes"] == "lm-eval" and meta["samples"] is True
    assert meta["lm_eval"]["lm_eval_version"] == "0.4.13" and meta["lm_eval"]["git_hash"] == results["git_hash"]
    assert meta["lm_eval"]["configs"]["gsm8k"]["num_fewshot"] == 5
    assert meta["lm_eval"]["config"]["model_args"]["pretrained"] == results["config"]["model_args"]["pretrained"]
    assert meta["lm_eval"]["config"]["model_args"]["dtype"] == "float32"
    assert {"lm-eval", item.tag} == tags
    assert shots == (5, "3.0")


def test_reimport_changes_nothing(imported):
    db, item = imported
    [again] = import_dir(db, FIXTURE)
    assert (again.run_id, again.new) == (item.run_id, False)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    finally:
        con.close()


def test_secret_model_args_are_redacted(tmp_path):
    out = tmp_path / "out" / "m"
    out.mkdir(parents=True)
    results = json.loads(RESULTS.read_text())
    results["config"]["model_args"]["token"] = "hf_SECRETSECRETSECRET"
    (out / RESULTS.name).write_text(json.dumps(results))
    shutil.copy(SAMPLES, out / SAMPLES.name)
    db = tmp_path / "r.duckdb"
    import_dir(db, tmp_path / "out")
    assert b"hf_SECRETSECRETSECRET" not in db.read_bytes()
    assert "hf_SECRETSECRETSECRET" not in duckdb.connect(str(db), read_only=True).execute(
        "SELECT string_agg(metadata::VARCHAR || backend_args::VARCHAR, '') FROM runs").fetchone()[0]


def test_metrics_only_import_cannot_be_paired(tmp_path):
    folder = tmp_path / "out" / MODEL_DIR.name
    folder.mkdir(parents=True)
    shutil.copy(RESULTS, folder / RESULTS.name)
    db = tmp_path / "r.duckdb"
    [metrics_only] = import_dir(db, tmp_path / "out")
    [full] = import_dir(db, FIXTURE)
    assert metrics_only.samples == 0 and metrics_only.run_id != full.run_id
    store = Store(db, read_only=True)
    try:
        with pytest.raises(UsageError, match="metrics only.*--log_samples"):
            compare_runs(store, metrics_only.run_id, full.run_id)
        assert len(store.metrics(metrics_only.run_id)) == 2
    finally:
        store.close()


def _broken(tmp_path: Path, edit) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(FIXTURE, root)
    edit(next(root.iterdir()))
    return root


@pytest.mark.parametrize("edit, message", [
    (lambda d: _rewrite(next(d.glob("results_*")), lambda r: r | {"lm_eval_version": "0.3.0"}),
     r"results_.*\.json: written by lm-eval 0\.3\.0; harness reads lm-eval 0\.4\.x output"),
    (lambda d: next(d.glob("results_*")).write_text('{"results": {'), r"results_.*\.json: malformed JSON at line 1"),
    (lambda d: _rewrite(next(d.glob("results_*")), lambda r: {k: v for k, v in r.items() if k != "configs"}),
     r"not lm-eval 0\.4 output \(no 'configs'\)"),
    (lambda d: next(d.glob("samples_*")).write_text(SAMPLES.read_text().splitlines()[0] + "\n{not json\n"),
     r"samples_gsm8k_.*\.jsonl:2: malformed JSON"),
    (lambda d: next(d.glob("samples_*")).write_text(json.dumps({"doc_id": 0}) + "\n"),
     r"samples_gsm8k_.*\.jsonl:1: not an lm-eval sample \(no doc_hash"),
])
def test_bad_input_is_one_line_and_stores_nothing(tmp_path, edit, message):
    root = _broken(tmp_path, edit)
    db = tmp_path / "r.duckdb"
    with pytest.raises(UsageError, match=message) as info:
        import_dir(db, root)
    assert "\n" not in str(info.value)
    assert not db.exists()


def test_a_folder_without_results_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no lm-eval results_<date>.json"):
        import_dir(tmp_path / "r.duckdb", tmp_path)
    with pytest.raises(UsageError, match="is not a directory"):
        import_dir(tmp_path / "r.duckdb", RESULTS)


def _rewrite(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_written_files_read_back_as_the_same_run(imported, tmp_path, monkeypatch):
    """A generate task with two filters out (lm-eval layout) and in again: same metrics, per-sample values, hashes."""
    monkeypatch.setenv("HARNESS_DATA_SOURCE", "fixture")
    db, item = imported
    store = Store(db, read_only=True)
    try:
        paths = write_run(store, item.run_id, tmp_path / "out")
    finally:
        store.close()
    results = json.loads(paths[0].read_text())
    reference = json.loads(RESULTS.read_text())
    assert results["results"]["gsm8k"].keys() == reference["results"]["gsm8k"].keys()
    assert lm_utils.make_table(results).count("exact_match") == 2
    ours, theirs = _lines(paths[1]), _lines(SAMPLES)
    assert [set(o) for o in ours] == [set(t) for t in theirs]
    assert sorted((o["doc_id"], o["filter"], o["exact_match"], o["filtered_resps"]) for o in ours) == \
        sorted((t["doc_id"], t["filter"], t["exact_match"], t["filtered_resps"]) for t in theirs)
    [back] = import_dir(db, tmp_path / "out")
    store = Store(db, read_only=True)
    try:
        for column in ("task, metric, value, stderr, n", ):
            sql = f"SELECT {column} FROM metrics WHERE run_id = ? ORDER BY task, metric"
            assert store.con.execute(sql, [back.run_id]).fetchall() == store.con.execute(sql, [item.run_id]).fetchall()
        sql = "SELECT doc_id, prompt_hash, target_hash, metrics::VARCHAR, extracted FROM samples WHERE run_id = ? ORDER BY doc_id"
        assert store.con.execute(sql, [back.run_id]).fetchall() == store.con.execute(sql, [item.run_id]).fetchall()
        comparison = compare_runs(store, item.run_id, back.run_id)
        assert comparison.flips == [] and all(m.n_paired == 2 and m.delta == 0 for m in comparison.metrics)
    finally:
        store.close()
