"""The static report: site pages, escaping, leaderboard numbers, comparison pages, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markupsafe import escape

from harness.report.site import build_site, comparison_html, page_name, render_comparison
from harness.store.db import MetricRow, SampleRow, Store
from tests.conftest import harness_cli

EVIL = '<script>alert("x")</script>'


def _add_run(store: Store, run_id: str, model: str, *, acc: float, suite: str | None = "smoke", tags=("baseline",),
             status: str = "complete", n_docs: int = 4, prompt_prefix: str = "Question") -> None:
    meta = {"git": {"sha": "abc123def", "dirty": False}, "libraries": {"torch": "2.13.0", "duckdb": "2.0.0"},
            "hardware": {"cpu": "Test CPU", "cpu_count": 2}, "backend": {"backend": "hf", "dtype": "float32"},
            "tasks": {"hellaswag": {"source": "fixture:hellaswag", "dataset_fingerprint": "f" * 64}}}
    store.create_run(run_id, f"cfg-{run_id}", {"model": model, "model_fingerprint": "fp-" + model, "backend": "hf",
                                              "backend_args": {"dtype": "float32"}, "suite": suite,
                                              "tasks": ["hellaswag", "mmlu_anatomy"], "num_fewshot": 0, "limit": n_docs,
                                              "seed": 1234, "metadata": meta}, tags)
    for task in ("hellaswag", "mmlu_anatomy"):
        store.record_task(run_id, {"task": task, "version": "1.0", "num_fewshot": 0, "source": f"fixture:{task}",
                                   "fingerprint": "d" * 64, "n_docs": n_docs, "prompts_hash": "e" * 64})
    samples = [SampleRow(task=task, doc_id=i, doc_hash=f"h{i}", prompt_hash=f"p{i}", target_hash=f"t{i}",
                         prompt=f"{prompt_prefix} {task} {i}: {EVIL if i == 1 else 'plain'}", target=f"answer {i}",
                         response=[-1.0, -2.0], extracted=f"choice {i % 2}", metrics={"acc": float(i % 2)},
                         loglikelihoods=[-1.0 - i, -2.0])
               for task in ("hellaswag", "mmlu_anatomy") for i in range(n_docs)]
    store.insert_samples(run_id, samples)
    store.write_metrics(run_id, [
        MetricRow("hellaswag", "acc", acc - 0.05, 0.02, acc - 0.09, acc - 0.01, n_docs),
        MetricRow("hellaswag", "acc_norm", acc, 0.02, acc - 0.04, acc + 0.04, n_docs),
        MetricRow("mmlu_anatomy", "acc", acc / 2, 0.03, acc / 2 - 0.06, acc / 2 + 0.06, n_docs),
    ])
    if status != "running":
        store.set_status(run_id, status, meta)


@pytest.fixture
def small_db(db_path: Path) -> Path:
    store = Store(db_path)
    _add_run(store, "run-aaa", "hf:model-a", acc=0.61)
    _add_run(store, "run-bbb", "hf:model-b", acc=0.42, tags=("candidate",), suite="standard")
    _add_run(store, "run-ccc", "hf:model-" + EVIL, acc=0.30, tags=(EVIL,))
    _add_run(store, "run-ddd", "hf:model-a", acc=0.10, status="running")
    store.close()
    return db_path


@pytest.fixture
def site(small_db: Path, tmp_path: Path) -> Path:
    store = Store(small_db, read_only=True)
    try:
        index = build_site(store, tmp_path / "site")
    finally:
        store.close()
    return index


def test_pages_and_assets_exist(site: Path):
    root = site.parent
    assert site.name == "index.html" and site.exists()
    for run_id in ("run-aaa", "run-bbb", "run-ccc", "run-ddd"):
        assert (root / "runs" / page_name(run_id)).exists()
    assert (root / "assets" / "report.css").exists() and (root / "assets" / "report.js").exists()
    text = site.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    assert 'id="leaderboard"' in text and "run-ddd" in text  # incomplete runs are listed, not ranked


def test_text_is_escaped(site: Path):
    index = site.read_text()
    page = (site.parent / "runs" / page_name("run-ccc")).read_text()
    for text in (index, page):
        assert EVIL not in text
        assert "<script>alert" not in text
    assert str(escape("hf:model-" + EVIL)) in index
    # the sample browser's JSON carries the prompt with '<' escaped, so it cannot close the <script> element
    data = re.search(r'<script type="application/json" id="samples-data">(.*?)</script>', page, re.S).group(1)
    prompts = [s["p"] for s in json.loads(data)]
    assert any(EVIL in p for p in prompts)
    assert "\\u003cscript>alert" in data


def test_leaderboard_numbers_match_the_metrics_table(site: Path, small_db: Path):
    import duckdb

    index = site.read_text()
    con = duckdb.connect(str(small_db), read_only=True)
    expected = con.execute("""SELECT run_id, task, metric, value, ci_low, ci_high FROM metrics m JOIN runs USING (run_id)
                              WHERE status = 'complete' AND (task, metric) IN (('hellaswag', 'acc_norm'), ('mmlu_anatomy', 'acc'))""").fetchall()
    con.close()
    assert len(expected) == 6
    headers = re.findall(r'<th title="([^"]+)">', index)
    assert headers == ["hellaswag / acc_norm", "mmlu_anatomy / acc"]
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-run="([^"]+)"(.*?)</tr>', index, re.S)}
    assert set(rows) == {"run-aaa", "run-bbb", "run-ccc"}
    for run_id, task, _metric, value, low, high in expected:
        column = ["hellaswag", "mmlu_anatomy"].index(task)
        cells = re.findall(r'<td class="num" data-value="([^"]+)"[^>]*>([^<]+)<span class="ci">± ([^<]+)</span>', rows[run_id])
        data_value, text, pm = cells[column]
        assert float(data_value) == pytest.approx(value, abs=1e-12)
        assert text.strip() == f"{value:.3f}" and pm == f"{(high - low) / 2:.3f}"
    # the run page shows the same value in its metrics table
    page = (site.parent / "runs" / page_name("run-aaa")).read_text()
    metrics_table = page.split('id="metrics"', 1)[1].split("</table>", 1)[0]
    assert "<td>hellaswag</td><td>acc_norm</td><td class=\"num\" data-value=\"0.61\">0.6100</td>" in metrics_table


def test_leaderboard_filters_have_every_tag_and_suite(site: Path):
    index = site.read_text()
    assert '<option value="baseline">' in index and '<option value="candidate">' in index
    assert '<option value="smoke">' in index and '<option value="standard">' in index
    latest = dict(re.findall(r'<tr data-run="([^"]+)".*?data-latest="(\d)"', index))
    assert latest == {"run-aaa": "1", "run-bbb": "1", "run-ccc": "1"}


def test_run_page_has_configuration_and_reproducibility(site: Path):
    page = (site.parent / "runs" / page_name("run-aaa")).read_text()
    for expected in ("abc123def", "library torch", "2.13.0", "Test CPU", "fixture:hellaswag", "seed", "1234",
                     "id=\"sample-search\"", "dddddddddddddddd", "All 8 samples"):
        assert expected in page, expected


def test_sample_cap_is_said_on_the_page(db_path: Path, tmp_path: Path, monkeypatch):
    import harness.report.data as report_data

    store = Store(db_path)
    _add_run(store, "run-big", "hf:big", acc=0.5, n_docs=30)
    monkeypatch.setattr(report_data.sample_json, "__defaults__", (10,))
    monkeypatch.setattr("harness.report.site.SAMPLES_PER_RUN", 10)
    build_site(store, tmp_path / "out")
    store.close()
    page = (tmp_path / "out" / "runs" / page_name("run-big")).read_text()
    data = re.search(r'id="samples-data">(.*?)</script>', page, re.S).group(1)
    rows = json.loads(data)
    assert len(rows) == 10 and {r["t"] for r in rows} == {"hellaswag", "mmlu_anatomy"}
    assert "This run has 60 samples; this page embeds\n10 of them" in page


def _comparison():
    from harness.decisions.compare import Comparison, Flip, LoglikelihoodShift, MetricComparison

    metrics = [MetricComparison("hellaswag", "acc", "binary", True, 0.6, 0.5, -0.1, -0.15, -0.05, 0.001, 0.002, 200, 5, 25),
               MetricComparison("mmlu_anatomy", "acc", "binary", True, 0.4, 0.42, 0.02, -0.03, 0.07, 0.5, 0.5, 100, 8, 6)]
    flips = [Flip("hellaswag", 3, "acc", "Finish: " + EVIL, "right", EVIL, "right", 1.0, 0.0)]
    ll = [LoglikelihoodShift("hellaswag", 200, 0.9, [0.1 * (i % 7 - 3) for i in range(800)],
                             [(-1.0 - i / 100, -1.1 - i / 100) for i in range(800)], [(3, 0.9), (7, 0.5)])]
    return Comparison("run-aaa", "run-bbb", "hf:model-a", "hf:model-a-q4", metrics, flips, ll, ["hellaswag: runs differ in prompt hashes"])


def test_comparison_page_is_self_contained_and_escaped(tmp_path: Path):
    path = tmp_path / "sub" / "cmp.html"
    render_comparison(_comparison(), path)
    text = path.read_text()
    assert "<style>" in text and "initSortable" in text and 'src="' not in text and "href=\"assets" not in text
    assert EVIL not in text and str(escape(EVIL)) in text
    assert "runs differ in prompt hashes" in text
    assert text.count("<svg") == 3  # delta CI bars, histogram, scatter
    assert 'class="num worse" data-value="-0.1"' in text  # significant drop marked
    assert "-0.1000" in text and "[-0.1500, -0.0500]" in text


def test_comparison_of_stored_runs(small_db: Path, tmp_path: Path):
    from harness.decisions.compare import compare_runs

    store = Store(small_db, read_only=True)
    try:
        comparison = compare_runs(store, "run-aaa", "run-bbb", n_bootstrap=200)
    finally:
        store.close()
    text = comparison_html(comparison)
    assert "hf:model-a" in text and "hf:model-b" in text and "<svg" in text


def test_report_cli(small_db: Path, tmp_path: Path):
    out = tmp_path / "cli-site"
    result = harness_cli("report", "--out", str(out), "--db", str(small_db))
    assert result.returncode == 0, result.stderr
    assert (out / "index.html").exists() and str(out / "index.html") in result.stdout
    missing = harness_cli("report", "--out", str(out), "--db", str(tmp_path / "nope.duckdb"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
