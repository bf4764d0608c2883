"""What it costs a writer to let readers in: the scheduler's flush pattern with the database held
open for the whole run (as before) and released after every batch (what harness does now).

    .venv/bin/python -m benchmarks.db_release [--flushes 200] [--rows 256] [--preload 200000]

Each flush stores `rows` cache answers (the scheduler's FLUSH_EVERY_N) into a database that
already holds `preload` cached answers, then, in the release mode, closes the file (DuckDB
checkpoints its WAL on close) and reopens it at the next flush. Printed: ms per flush in each mode,
the ratio, and what that adds to a run that flushes every 2 s (FLUSH_EVERY_S).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness.run.scheduler import FLUSH_EVERY_S
from harness.store.db import Store


def flushes(db: Path, n: int, rows: int, release: bool) -> float:
    store = Store(db)
    started = time.perf_counter()
    for i in range(n):
        store.cache_put(f"fp-{release}", [(f"{release}-{i}-{j}", "generate", [f"answer {i} {j} " * 8]) for j in range(rows)])
        if release:
            store.release()
    store.close()
    return (time.perf_counter() - started) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=200)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--preload", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        store = Store(db)
        store.con.execute("INSERT INTO cache SELECT 'preload', 'k' || i::VARCHAR, 'generate', '[\"x\"]', now()::TIMESTAMP "
                          "FROM range(?) t(i)", [args.preload])
        store.close()
        held = flushes(db, args.flushes, args.rows, release=False)
        released = flushes(db, args.flushes, args.rows, release=True)
    print(f"{args.flushes} flushes of {args.rows} answers into a database of {args.preload:,} cached answers")
    print("| mode | ms per flush | ratio |\n|---|---|---|")
    print(f"| held open (reference) | {held:.2f} | 1.00 |")
    print(f"| released after each flush | {released:.2f} | {released / held:.2f} |")
    extra = released - held
    print(f"added per flush: {extra:.2f} ms; at one flush per {FLUSH_EVERY_S:g} s that is {extra / (FLUSH_EVERY_S * 1000):.2%} "
          "of a run's wall time")


if __name__ == "__main__":
    main()
