"""Serving-benchmark pages of the static site: bench/index.html and bench/<bench>.html.

`harness report` calls `write_bench_pages` after the leaderboard. The index compares benchmarks
(TTFT and TPOT against output throughput, one curve per benchmark); a benchmark's page has its
configuration and hardware, a table per load level, latency-versus-throughput curves (one point
per level) and the TTFT and ITL distributions of every level. bench/index.html is always
written, so the leaderboard's link to it never dangles.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup

from harness.bench import store as bench_store
from harness.report import templates
from harness.report.plots import COLOURS, Series, line_plot
from harness.report.svg import histogram

if TYPE_CHECKING:
    import pandas as pd

    from harness.store.db import Store

INDEX_CURVES = 8  # benchmarks drawn together on the index
STAT_KEYS = ("mean", "std", "p50", "p90", "p95", "p99")


def bench_page_name(bench_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", bench_id) + ".html"


def _num(x: object, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _level_label(row: dict) -> str:
    if row.get("rate") is None or (isinstance(row["rate"], float) and math.isnan(row["rate"])):
        return f"c={int(row['concurrency'])}"
    rate = row["rate"]
    return "rate=inf" if math.isinf(rate) else f"rate={rate:g}/s"


def _levels(store: Store, bench_id: str) -> list[dict]:
    levels = []
    for row in bench_store.bench_levels(store, bench_id).to_dict("records"):
        summary = json.loads(row["summary"]) if row.get("summary") else {}
        levels.append({"row": row, "summary": summary, "label": _level_label(row)})
    return levels


def _stat_series(levels: list[dict], metric: str, stats: tuple[str, ...], names: tuple[str, ...]) -> list[Series]:
    series = []
    for i, (stat, name) in enumerate(zip(stats, names)):
        points = tuple((float(lv["summary"]["output_tokens_per_s"]), float(v), lv["label"]) for lv in levels
                       if (v := lv["summary"].get(metric, {}).get(stat)) is not None)
        series.append(Series(name, points, COLOURS[i % len(COLOURS)], dashed=stat != "p50"))
    return series


def curves(levels: list[dict]) -> list[Markup]:
    x = "output tokens/s"
    return [
        line_plot(_stat_series(levels, "ttft_ms", ("p50", "p90", "p99"), ("TTFT p50", "TTFT p90", "TTFT p99")),
                  xlabel=x, ylabel="TTFT (ms)", title="time to first token vs throughput"),
        line_plot(_stat_series(levels, "tpot_ms", ("p50", "p99"), ("TPOT p50", "TPOT p99"))
                  + _stat_series(levels, "itl_ms", ("p99",), ("ITL p99",)),
                  xlabel=x, ylabel="ms per token", title="time per output token vs throughput"),
        line_plot(_stat_series(levels, "e2e_ms", ("p50", "p99"), ("E2E p50", "E2E p99")),
                  xlabel=x, ylabel="E2E latency (ms)", title="end-to-end latency vs throughput"),
    ]


def _distributions(store: Store, bench_id: str, levels: list[dict]) -> list[dict]:
    out = []
    for lv in levels:
        ttft, itl = bench_store.level_samples(store, bench_id, int(lv["row"]["level"]))
        out.append({"label": lv["label"], "ttft": histogram(ttft, xlabel=f"TTFT (ms), {lv['label']}"),
                    "itl": histogram(itl, xlabel=f"ITL (ms), {lv['label']}", colour="#1a7f37"),
                    "n_ttft": len(ttft), "n_itl": len(itl)})
    return out


def _level_rows(levels: list[dict]) -> list[dict]:
    rows = []
    for lv in levels:
        s = lv["summary"]
        stats = {m: [_num(s.get(m, {}).get(k)) for k in STAT_KEYS] for m in bench_store.STAT_METRICS}
        rows.append({"label": lv["label"], "s": s, "stats": stats,
                     "figures": [("completed", s.get("completed")), ("failed", s.get("failed")),
                                 ("duration s", _num(s.get("duration_s"))), ("requests/s", _num(s.get("requests_per_s"))),
                                 ("output tok/s", _num(s.get("output_tokens_per_s"), 1)),
                                 ("total tok/s", _num(s.get("total_tokens_per_s"), 1)),
                                 ("goodput req/s", _num(s.get("goodput_requests_per_s"))),
                                 ("SLO attainment", _num(s.get("slo_attainment"), 3)),
                                 ("$ / M output tokens", _num(s.get("cost_per_million_output_tokens"), 4)),
                                 ("peak memory MiB", _num(s.get("peak_memory_mb"), 0)),
                                 ("token counts", s.get("token_source"))],
                     "errors": s.get("errors") or {}})
    return rows


def _config_rows(run: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def text(v: object) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return v if isinstance(v, str) else json.dumps(v, default=str)

    keys = ("bench_id", "status", "created_at", "finished_at", "target", "model", "backend", "api", "dataset", "input_len",
            "output_len", "num_prompts", "duration_s", "warmup", "ignore_eos", "seed", "slo", "gpu_cost_per_hour",
            "tokenizer", "token_count_source", "tags", "config")
    config = [(k.replace("_", " "), text(run.get(k))) for k in keys]
    meta = json.loads(run["metadata"]) if run.get("metadata") else {}
    repro = [(k.replace("_", " "), text(meta[k])) for k in ("hardware", "hardware_note", "backend", "harness_version",
                                                            "git", "python", "libraries", "argv") if k in meta]
    return config, repro


def _index_curves(store: Store, runs: pd.DataFrame) -> list[Markup]:
    complete = [r for r in runs.to_dict("records") if r["status"] == "complete"][:INDEX_CURVES]
    ttft, tpot = [], []
    for i, run in enumerate(complete):
        levels = _levels(store, run["bench_id"])
        name = f"{str(run['model'])[-14:]} {run['bench_id'][-6:]}"
        colour = COLOURS[i % len(COLOURS)]
        for target, metric in ((ttft, "ttft_ms"), (tpot, "tpot_ms")):
            points = tuple((float(lv["summary"]["output_tokens_per_s"]), float(v), lv["label"]) for lv in levels
                           if (v := lv["summary"].get(metric, {}).get("p50")) is not None)
            target.append(Series(name, points, colour))
    return [line_plot(ttft, xlabel="output tokens/s", ylabel="TTFT p50 (ms)", title="TTFT p50 vs throughput"),
            line_plot(tpot, xlabel="output tokens/s", ylabel="TPOT p50 (ms)", title="TPOT p50 vs throughput")]


def write_bench_pages(store: Store, out_dir: Path) -> Path:
    """Write bench/index.html and one page per benchmark under out_dir; return the index path."""
    bench_dir = Path(out_dir) / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    runs = bench_store.bench_runs(store)
    records = runs.to_dict("records") if not runs.empty else []
    env = templates.env()
    for run in records:
        levels = _levels(store, run["bench_id"])
        config, repro = _config_rows(run)
        html = env.get_template("bench.html").render(
            root="../", inline_assets=None, run=run, config=config, reproducibility=repro, levels=_level_rows(levels),
            curves=curves(levels), distributions=_distributions(store, run["bench_id"], levels),
            stat_keys=STAT_KEYS, stat_metrics=bench_store.STAT_METRICS)
        (bench_dir / bench_page_name(run["bench_id"])).write_text(html, encoding="utf-8")
    rows = [{"run": r, "page": bench_page_name(r["bench_id"])} for r in records]
    index = bench_dir / "index.html"
    index.write_text(env.get_template("bench_index.html").render(
        root="../", inline_assets=None, rows=rows, curves=_index_curves(store, runs) if records else []), encoding="utf-8")
    return index
