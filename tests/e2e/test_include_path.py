"""`harness tasks|run --include-path DIR` on a tiny lm-eval YAML task the test writes (embedded model, one short run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import harness_cli

ENV = {"HARNESS_DATA_SOURCE": "fixture"}
TASK_YAML = """task: my_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: docs.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{label}}"
doc_to_choice: "{{choices}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 2.0
"""
DOCS = [{"question": "What colour is the sky?", "choices": ["blue", "green"], "label": 0},
        {"question": "How many legs has a cat?", "choices": ["three", "four"], "label": 1},
        {"question": "Is water wet?", "choices": ["yes", "no"], "label": 0}]


def tasks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my_lm_eval_tasks"
    folder.mkdir()
    (folder / "my_task.yaml").write_text(TASK_YAML)
    (folder / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / "refused.yaml").write_text(TASK_YAML.replace("my_task", "my_refused").replace("acc_norm", "not_a_metric"))
    (folder / "hellaswag.yaml").write_text(TASK_YAML.replace("my_task", "hellaswag"))
    return folder


def test_tasks_lists_loaded_refused_and_namespaced(tmp_path):
    folder = tasks_dir(tmp_path)
    result = harness_cli("tasks", "--include_path", str(folder), env=ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("my_task\tv2.0+yaml.") for line in lines)
    assert any(line.startswith("hellaswag\tv1.0\t") for line in lines)  # the native task stays
    assert any(line.startswith("lm_eval/hellaswag\tv2.0+yaml.") for line in lines)
    refused = [line for line in lines if line.startswith("refused\tmy_refused\t")]
    assert len(refused) == 1 and "metric_list[1]: unknown metric not_a_metric for multiple_choice" in refused[0]


def test_run_include_path_task_and_record_version(tmp_path):
    folder, db, out = tasks_dir(tmp_path), tmp_path / "r.duckdb", tmp_path / "out.json"
    result = harness_cli("run", "--include-path", str(folder), "--tasks", "my_task", "--limit", "2", "--db", str(db),
                         "--json", str(out), "--no-progress", env=ENV)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["tasks"]["my_task"]["acc"]["n"] == 2
    shown = harness_cli("show", summary["run_id"], "--db", str(db))
    assert "task my_task: v2.0+yaml." in shown.stdout and "2 docs" in shown.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    folder = tasks_dir(tmp_path)
    (folder / "broken.yaml").write_text("task: broken\ninclude: nowhere.yaml\n")
    (folder / "strict.yaml").write_text(TASK_YAML.replace("my_task", "strict").replace("{{question}}", "{{qestion}}"))
    db = tmp_path / "never.duckdb"
    cases = {"my_refused": "unknown metric not_a_metric for multiple_choice", "broken": "include: included file nowhere.yaml does not exist",
             "strict": "doc_to_text: template", "nope_task": "unknown task: nope_task"}
    for task, message in cases.items():
        result = harness_cli("run", "--include-path", str(folder), "--tasks", task, "--db", str(db), env=ENV)
        assert result.returncode == 2, (task, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, (task, result.stderr)
    missing = harness_cli("tasks", "--include-path", str(tmp_path / "absent"), env=ENV)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    assert not db.exists()


def test_lm_evals_own_task_folder_against_a_hub_mirror(tmp_path):
    """The issue's command: lm-eval's shipped YAMLs as they are, reading hub-schema data from HARNESS_HUB_MIRROR.

    lm-eval's arc_easy collides with the native task and runs as lm_eval/arc_easy; gsm8k_cot_zeroshot has no
    native twin and keeps its name. The mirror holds fixture documents in the hub's layout (a README with configs)."""
    import lm_eval

    from tests.conftest import write_hub_repo
    from tests.unit.test_tasks import fixture_dataset

    arc, gsm = fixture_dataset("arc_easy"), fixture_dataset("gsm8k")
    mirror = tmp_path / "hub"
    write_hub_repo(mirror / "allenai" / "ai2_arc", {"ARC-Easy": {"test": arc.docs[:3], "validation": arc.docs[3:5],
                                                                  "train": arc.docs[5:8]}})
    write_hub_repo(mirror / "openai" / "gsm8k", {"main": {"test": gsm.docs[:2], "train": gsm.fewshot_docs[:2]}})
    db, out = tmp_path / "r.duckdb", tmp_path / "out.json"
    env = {"HARNESS_HUB_MIRROR": str(mirror), "HARNESS_DATA_SOURCE": "hub", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = harness_cli("run", "--include-path", str(Path(lm_eval.__file__).parent / "tasks"), "--tasks",
                         "lm_eval/arc_easy,gsm8k_cot_zeroshot", "--limit", "1", "--db", str(db), "--json", str(out),
                         "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["tasks"]["lm_eval/arc_easy"]["acc"]["n"] == 1
    assert set(summary["tasks"]["gsm8k_cot_zeroshot"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    shown = harness_cli("show", summary["run_id"], "--db", str(db))
    assert "source hub:allenai/ai2_arc" in shown.stdout and "source hub:openai/gsm8k" in shown.stdout, shown.stdout


ROLLING_YAML = """task: my_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: pages.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{page}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""
PAGES = [{"page": "The cat sat on the mat. It was a sunny day, and the cat was happy."},
         {"page": "Water boils at one hundred degrees Celsius at sea level."},
         {"page": "A short third page."}]
PPL_YAML = ROLLING_YAML.replace("my_rolling", "my_ppl").replace("loglikelihood_rolling", "loglikelihood") \
    .replace('doc_to_text: ""', 'doc_to_text: "Page:"').replace('"{{page}}"', '" {{page}}"') \
    .split("metric_list:")[0] + "metric_list:\n  - metric: perplexity\n"


def test_a_rolling_loglikelihood_task_runs_with_lm_evals_corpus_aggregations(tmp_path, monkeypatch):
    """loglikelihood_rolling through the real model: the stored corpus metrics are lm-eval's aggregations of the
    stored per-document items (weighted_perplexity, bits_per_byte), and none is paired per document; a
    loglikelihood perplexity in the same run gets lm-eval's bootstrap stderr with --bootstrap_iters."""
    import math

    import duckdb

    folder = tmp_path / "rolling"
    folder.mkdir()
    (folder / "my_rolling.yaml").write_text(ROLLING_YAML)
    (folder / "my_ppl.yaml").write_text(PPL_YAML)
    (folder / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    db, out = tmp_path / "r.duckdb", tmp_path / "out.json"
    result = harness_cli("run", "--include-path", str(folder), "--tasks", "my_rolling,my_ppl", "--db", str(db), "--json",
                         str(out), "--no-progress", "--bootstrap_iters", "3000", env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    stored = json.loads(out.read_text())["tasks"]
    metrics = {m: v["value"] for m, v in stored["my_rolling"].items()}
    assert {m: v["stderr"] for m, v in stored["my_rolling"].items()} == dict.fromkeys(metrics)  # lm-eval has none ("N/A")
    con = duckdb.connect(str(db), read_only=True)
    items = [json.loads(m) for (m,) in con.execute("SELECT metrics::VARCHAR FROM samples WHERE task = 'my_rolling' "
                                                     "ORDER BY doc_id").fetchall()]
    ppl_items = [json.loads(m)["perplexity"] for (m,) in con.execute("SELECT metrics::VARCHAR FROM samples WHERE "
                                                                      "task = 'my_ppl' ORDER BY doc_id").fetchall()]
    meta = json.loads(con.execute("SELECT metadata::VARCHAR FROM runs").fetchone()[0])
    con.close()
    # perplexity's stderr is lm-eval's own bootstrap of the stored items, with the resamples asked for
    from lm_eval.api import metrics as lm_metrics

    monkeypatch.setenv("DISABLE_MULTIPROC", "1")  # lm-eval's bootstrap in this process, not a pool
    expected = lm_metrics.bootstrap_stderr(lm_metrics.perplexity, [i[0] for i in ppl_items], 3000)
    assert len(ppl_items) == 3 and stored["my_ppl"]["perplexity"]["stderr"] == expected > 0
    assert stored["my_ppl"]["perplexity"]["value"] == lm_metrics.perplexity([i[0] for i in ppl_items])
    assert meta["bootstrap_iters"] == 3000
    lls = [i["word_perplexity"][0] for i in items]
    assert all(ll < 0 for ll in lls) and [i["word_perplexity"][1] for i in items] == [len(p["page"].split()) for p in PAGES]
    words = sum(i["word_perplexity"][1] for i in items)
    nbytes = sum(len(p["page"].encode()) for p in PAGES)
    assert metrics["word_perplexity"] == pytest.approx(math.exp(-sum(lls) / words), rel=1e-12)
    assert metrics["byte_perplexity"] == pytest.approx(math.exp(-sum(lls) / nbytes), rel=1e-12)
    assert metrics["bits_per_byte"] == pytest.approx(-sum(lls) / nbytes / math.log(2), rel=1e-12)
