"""Scale check for reports: 1,000 runs and 1,000,000 sample rows.

    .venv/bin/python benchmarks/report_scale.py [--keep DIR]

Builds a synthetic database with DuckDB SQL (generate_series), then times `harness report`
through the real command line (target <= 10 s) and, when harness.decisions.compare exists, a paired
compare of two 100,000-sample runs (target <= 2 s), both in-process and through `harness compare`.
Runs 0 and 1 hold 100,000 samples each (the same documents, different answers); the other
998 runs share the remaining 800,000 rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.store.db import Store  # noqa: E402

N_RUNS, N_SAMPLES, BIG = 1000, 1_000_000, 100_000
TASKS = ("hellaswag", "mmlu_anatomy")


def build(db: Path) -> None:
    store = Store(db)
    con = store.con
    con.execute(f"""INSERT INTO runs SELECT printf('run-%04d', r), 'complete', TIMESTAMP '2025-01-01' + INTERVAL (r) MINUTE,
                           TIMESTAMP '2025-01-01' + INTERVAL (r + 1) MINUTE, 'cfg' || r, 'hf:model-' || (r % 50),
                           'fp' || (r % 50), 'hf', '{{"dtype": "float32"}}', CASE WHEN r % 3 = 0 THEN 'smoke' ELSE 'standard' END,
                           '["hellaswag", "mmlu_anatomy"]', 0, NULL, 1234,
                           '{{"git": {{"sha": "0123456789abcdef", "dirty": false}}, "libraries": {{"torch": "2.13.0"}}, "hardware": {{"cpu": "synthetic"}}}}'
                    FROM range({N_RUNS}) t(r)""")
    con.execute(f"""INSERT INTO run_tags SELECT printf('run-%04d', r), CASE WHEN r % 2 = 0 THEN 'nightly' ELSE 'release' END
                    FROM range({N_RUNS}) t(r)""")
    con.execute(f"""INSERT INTO run_tasks SELECT printf('run-%04d', r), task, '1.0', 0, 'fixture:' || task, repeat('d', 64), NULL, repeat('e', 64)
                    FROM range({N_RUNS}) t(r), (VALUES ('hellaswag'), ('mmlu_anatomy')) k(task)""")
    # rows i < 200,000 belong to runs 0 and 1; the rest are spread over runs 2..999
    con.execute(f"""INSERT INTO samples
        WITH s AS (
            SELECT i,
                   CASE WHEN i < {2 * BIG} THEN i // {BIG} ELSE 2 + (i - {2 * BIG}) % {N_RUNS - 2} END AS r,
                   CASE WHEN i < {2 * BIG} THEN i % {BIG} ELSE (i - {2 * BIG}) // {N_RUNS - 2} END AS local
            FROM range({N_SAMPLES}) t(i))
        SELECT printf('run-%04d', r), ['hellaswag', 'mmlu_anatomy'][local % 2 + 1], local // 2,
               'doc' || local, 'prompt' || local, 'target' || local,
               'Question ' || local || ': which of the four endings fits best? Answer:', 'ending ' || (local % 4),
               '[-1.5, -2.5, -3.0, -2.0]', 'ending ' || (hash(i) % 4),
               '{{"acc": ' || CASE WHEN hash(r * 7 + local) % 3 = 0 THEN 0 ELSE 1 END || '}}',
               [-1.0 - (hash(i) % 100) / 50.0, -2.0 - (hash(i + 1) % 100) / 50.0, -2.5, -3.0]
        FROM s""")
    con.execute("""INSERT INTO metrics
        SELECT run_id, task, 'acc', avg(CAST(json_extract(metrics, '$.acc') AS DOUBLE)) AS v,
               sqrt(v * (1 - v) / count(*)), v - 1.96 * sqrt(v * (1 - v) / count(*)), v + 1.96 * sqrt(v * (1 - v) / count(*)), count(*)
        FROM samples GROUP BY run_id, task""")
    counts = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM samples)").fetchone()
    store.close()
    assert counts == (N_RUNS, N_SAMPLES), counts


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed: {result.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build in this directory and keep the database and site")
    options = parser.parse_args()
    work = options.keep or Path(tempfile.mkdtemp(prefix="report-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    db, site = work / "scale.duckdb", work / "site"
    if db.exists():
        db.unlink()

    start = time.perf_counter()
    build(db)
    print(f"synthetic database: {N_RUNS} runs, {N_SAMPLES:,} sample rows, built in {time.perf_counter() - start:.1f} s ({db})")

    seconds = timed(["report", "--out", str(site), "--db", str(db)])
    pages = len(list((site / "runs").glob("*.html")))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 2**20
    print(f"harness report: {seconds:.2f} s (target <= 10 s), {pages} run pages, {size:.0f} MiB")

    try:
        from harness.decisions.compare import compare_runs
    except ImportError:
        print("harness compare: harness/compare.py is not there yet; skipped")
        return
    store = Store(db, read_only=True)
    start = time.perf_counter()
    comparison = compare_runs(store, "run-0000", "run-0001")
    seconds = time.perf_counter() - start
    store.close()
    n = sum(m.n_paired for m in comparison.metrics)
    print(f"compare_runs (in-process), two runs of {BIG:,} samples: {seconds:.2f} s (target <= 2 s), "
          f"{n:,} paired, {len(comparison.flips):,} flips")
    seconds = timed(["compare", "run-0000", "run-0001", "--db", str(db), "--html", str(work / "cmp.html")])
    print(f"harness compare --html (whole command, process start included): {seconds:.2f} s")


if __name__ == "__main__":
    main()
