"""What `--executor ray` costs and gives on one machine, and how fast the driver's merge path is.

    .venv/bin/python benchmarks/ray_overhead.py [--docs 200] [--out ray_overhead.json]

Run from the repository root. The workload is the embedded model (hf:smollm2-135m-instruct) on
HellaSwag (`--docs` documents) and MMLU (about `--docs` documents spread over its subjects),
documents from HARNESS_DATA_DIR when it is set, else the fixtures (HARNESS_DATA_SOURCE=fixture).
Every run is a `harness run` subprocess into a fresh database (no cache reuse), so each time is
what a user pays, Ray's start-up included:

- serial, 1 torch thread (OMP_NUM_THREADS=1)  vs  --executor ray --workers 1 --worker-cpus 1 (target <= 1.15x)
- serial, 2 torch threads                      vs  --executor ray --workers 2 --worker-cpus 1
- Ray's own start-up: `ray.init(address="local", num_cpus=2)` + shutdown in a subprocess, and the
  time until hf replicas are ready (ReplicaPool built in this process) against loading the model here
- the driver's merge path: Scheduler.answer over synthetic loglikelihood requests answered instantly
  by a fake backend, without Ray and through 1, 2 and 4 replicas, with the time spent in
  Store.cache_put (the single DuckDB writer) measured on its own

Printed: a table of reference and candidate wall times with their ratio, then the absolute numbers;
everything also goes to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/ray_overhead.py`: benchmarks.ray_overhead must import (the fake backend)
    sys.path.insert(0, str(ROOT))

from harness.backends.base import Backend, ModelSpec, Progress, register_backend  # noqa: E402
from harness.core.config import DEFAULT_MODEL, RayOptions  # noqa: E402
from harness.core.requests import Loglikelihood, LoglikelihoodResult  # noqa: E402

FAKE_TARGET = "benchmarks.ray_overhead:FakeBackend"
TARGET_RATIO_ONE_WORKER = 1.15
SUMMARY = re.compile(r"(\d+) unique requests, (\d+) from cache, (\d+) computed")


class FakeBackend(Backend):
    """Answers loglikelihood requests instantly: what is left of a run is the driver's own work."""

    name = "fake"
    supports = frozenset({"loglikelihood"})

    def fingerprint(self) -> str:
        return "fake-backend-v1"

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        for i, request in enumerate(requests):
            yield i, LoglikelihoodResult(-float(len(request.continuation)), True)
        progress(len(requests))


# ---- the real workload, as subprocesses -------------------------------------------------------


def data_env() -> dict[str, str]:
    if os.environ.get("HARNESS_DATA_DIR"):
        return {}
    return {"HARNESS_DATA_SOURCE": "fixture"}


def write_suite(path: Path, docs: int) -> dict[str, int]:
    from harness import tasks as catalog

    subjects = len(catalog.expand(["mmlu"]))
    per_subject = max(1, math.ceil(docs / subjects))
    path.write_text(textwrap.dedent(f"""\
        description: benchmarks/ray_overhead.py workload
        tasks:
          - {{name: hellaswag, limit: {docs}}}
          - {{name: mmlu, limit: {per_subject}}}
        """))
    return {"hellaswag_limit": docs, "mmlu_subjects": subjects, "mmlu_limit_per_subject": per_subject}


def harness_run(name: str, tmp: Path, suite: Path, threads: int, extra: list[str]) -> dict[str, Any]:
    db, out = tmp / f"{name}.duckdb", tmp / f"{name}.json"
    for stale in (db, out):
        stale.unlink(missing_ok=True)  # a fresh database every time: nothing comes from the cache
    argv = [sys.executable, "-m", "harness", "run", "--suite", str(suite), "--no-progress", "--db", str(db),
            "--json", str(out), *extra]
    env = {**os.environ, **data_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise SystemExit(f"{name}: harness run exited {proc.returncode}:\n" + "\n".join(tail))
    found = SUMMARY.search(proc.stdout)
    unique, cached, computed = (int(x) for x in found.groups()) if found else (None, None, None)
    return {"wall_s": wall, "argv": argv[1:], "threads": threads, "unique_requests": unique, "cached": cached,
            "computed": computed, "requests_per_s": computed / wall if computed else None,
            "metrics": json.loads(out.read_text())["tasks"]}


def max_metric_diff(a: dict, b: dict) -> float | None:
    diffs = [abs(a[t][m]["value"] - b[t][m]["value"]) for t in a if t in b for m in a[t] if m in b[t]
             if a[t][m]["value"] is not None and b[t][m]["value"] is not None]
    return max(diffs) if diffs else None


# ---- Ray's start-up ---------------------------------------------------------------------------

RAY_INIT = """
import json, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
t2 = time.perf_counter()
ray.shutdown()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}))
"""


def ray_init_subprocess() -> dict[str, float]:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RAY_INIT], cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit("ray.init in a subprocess failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-10:]))
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    timings["process_s"] = total
    return timings


def replicas_ready(workers: int) -> dict[str, float]:
    """Seconds until `workers` hf replicas have loaded the model, against loading it in this process."""
    from harness.backends.base import make_backend, parse_model_spec
    from harness.run.ray_pool import RayBackend

    local = make_backend(parse_model_spec(DEFAULT_MODEL))
    started = time.perf_counter()
    local.load()
    local_load = time.perf_counter() - started
    local.close()
    ray_backend = RayBackend(make_backend(parse_model_spec(DEFAULT_MODEL)), RayOptions(workers=workers, worker_cpus=1.0))
    started = time.perf_counter()
    ray_backend.start()
    ready = time.perf_counter() - started
    ray_backend.close()
    return {"workers": workers, "local_load_s": local_load, "replicas_ready_s": ready}


# ---- the driver's merge path ------------------------------------------------------------------


def synthetic_requests(n: int) -> list[Loglikelihood]:
    """Distinct requests of varied length, four continuations per context as a multiple-choice task has."""
    return [Loglikelihood(context=f"Question {i // 4}: " + "word " * (8 + (i * 7919) % 120),
                          continuation=f" answer {i % 4}" * (1 + i % 3)) for i in range(n)]


class Timed:
    """Wraps a Store method, adding up the seconds spent in it."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method, self.seconds, self.calls = method, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def drive(backend: Backend, requests: list[Loglikelihood], db: Path) -> dict[str, float]:
    from harness.run.scheduler import Scheduler
    from harness.store.db import Store

    db.unlink(missing_ok=True)
    store = Store(db)
    put, release = Timed(store.cache_put), Timed(store.release)
    store.cache_put, store.release = put, release  # type: ignore[method-assign]
    scheduler = Scheduler(store, backend, backend.fingerprint(), show_progress=False)
    started = time.perf_counter()
    answers = scheduler.answer(requests)
    wall = time.perf_counter() - started
    store.close()
    assert len(answers) == len(requests) == scheduler.stats.computed, "the fake backend left requests unanswered"
    return {"requests": len(requests), "wall_s": wall, "requests_per_s": len(requests) / wall,
            "cache_put_s": put.seconds, "cache_put_calls": put.calls, "release_s": release.seconds,
            "cache_put_share": put.seconds / wall, "cache_put_rows_per_s": len(requests) / put.seconds if put.seconds else None}


def driver_throughput(n: int, worker_counts: list[int], tmp: Path, with_replicas: int) -> dict[str, Any]:
    from harness.run.ray_cluster import ray_session
    from harness.run.ray_pool import RayBackend

    register_backend("fake", FAKE_TARGET)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # the workers import it
    spec = ModelSpec("fake", "x", {})
    requests = synthetic_requests(n)
    result: dict[str, Any] = {"no_ray": drive(FakeBackend(spec), requests, tmp / "fake-local.duckdb"), "ray": {}}
    cpus = os.cpu_count() or 1
    with ray_session(RayOptions()):  # one fresh local cluster for every measurement below (its start-up is timed apart)
        if with_replicas:
            result["hf_replicas"] = replicas_ready(with_replicas)
        for workers in worker_counts:
            backend = RayBackend(FakeBackend(spec), RayOptions(workers=workers, worker_cpus=min(1.0, cpus / workers)))
            started = time.perf_counter()
            backend.start()
            ready = time.perf_counter() - started
            try:
                numbers = drive(backend, requests, tmp / f"fake-ray-{workers}.duckdb")
            finally:
                backend.close()
            result["ray"][str(workers)] = {**numbers, "workers": workers, "replicas_ready_s": ready}
    return result


# ---- output ------------------------------------------------------------------------------------


def row(name: str, ref: float, cand: float, note: str = "") -> dict[str, Any]:
    return {"measurement": name, "reference_s": ref, "candidate_s": cand, "ratio": cand / ref, "note": note}


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| measurement | reference wall s | candidate wall s | ratio | note |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['measurement']} | {r['reference_s']:.2f} | {r['candidate_s']:.2f} | {r['ratio']:.2f} | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200, help="HellaSwag documents, and about as many MMLU ones")
    parser.add_argument("--out", type=Path, default=None, help="write every number here as JSON")
    parser.add_argument("--fake-requests", type=int, default=4000, help="synthetic requests for the driver throughput")
    parser.add_argument("--fake-workers", default="1,2,4", help="replica counts for the driver throughput")
    parser.add_argument("--skip-runs", action="store_true", help="only Ray's start-up and the driver throughput")
    parser.add_argument("--skip-driver", action="store_true", help="only the harness run subprocesses and ray.init")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed first run (converts the embedded model, warms the file cache)")
    args = parser.parse_args()
    if args.docs < 1 or args.fake_requests < 1:
        parser.error("--docs and --fake-requests must be >= 1")
    worker_counts = [int(w) for w in args.fake_workers.split(",") if w.strip()]
    report: dict[str, Any] = {"model": DEFAULT_MODEL, "cpus": os.cpu_count(),
                              "data": "mirror " + os.environ["HARNESS_DATA_DIR"] if os.environ.get("HARNESS_DATA_DIR") else "fixture"}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as name:
        tmp = Path(name)
        if not args.skip_runs:
            suite = tmp / "workload.yaml"
            report["workload"] = write_suite(suite, args.docs)
            if not args.no_warmup:
                harness_run("warmup", tmp, suite, 1, ["--limit", "1"])
            ray1 = ["--executor", "ray", "--workers", "1", "--worker-cpus", "1"]
            ray2 = ["--executor", "ray", "--workers", "2", "--worker-cpus", "1"]
            runs = {"serial_1_thread": harness_run("serial_1_thread", tmp, suite, 1, []),
                    "ray_1_worker": harness_run("ray_1_worker", tmp, suite, 1, ray1),
                    "serial_2_threads": harness_run("serial_2_threads", tmp, suite, 2, []),
                    "ray_2_workers": harness_run("ray_2_workers", tmp, suite, 1, ray2)}
            report["runs"] = runs
            report["max_metric_diff"] = {k: max_metric_diff(runs["serial_1_thread"]["metrics"], runs[k]["metrics"])
                                         for k in runs if k != "serial_1_thread"}
            wall = {k: v["wall_s"] for k, v in runs.items()}
            rows.append(row("ray 1 worker x 1 thread vs serial 1 thread", wall["serial_1_thread"], wall["ray_1_worker"],
                            f"target <= {TARGET_RATIO_ONE_WORKER}"))
            rows.append(row("ray 2 workers x 1 thread vs serial 2 threads", wall["serial_2_threads"], wall["ray_2_workers"]))
            rows.append(row("ray 2 workers vs ray 1 worker", wall["ray_1_worker"], wall["ray_2_workers"], "scaling"))
        report["ray_init"] = ray_init_subprocess()
        if not args.skip_driver:
            report["driver"] = driver_throughput(args.fake_requests, worker_counts, tmp, 0 if args.skip_runs else 1)
            local = report["driver"]["no_ray"]
            for workers, numbers in report["driver"]["ray"].items():
                rows.append(row(f"driver merge, fake backend, {workers} replica(s) vs no Ray", local["wall_s"], numbers["wall_s"],
                                f"{args.fake_requests} requests"))
    report["table"] = rows

    print_table(rows)
    print()
    for name, r in report.get("runs", {}).items():
        rps = f"{r['requests_per_s']:.1f} requests/s" if r["requests_per_s"] else "requests unknown"
        print(f"{name}: {r['wall_s']:.2f} s, {r['computed']} requests computed, {rps}")
    for name, diff in report.get("max_metric_diff", {}).items():
        print(f"{name}: largest metric difference from serial_1_thread {diff if diff is None else f'{diff:.2e}'}")
    init = report["ray_init"]
    print(f"ray: import {init['import_s']:.2f} s, init(address='local', num_cpus=2) {init['init_s']:.2f} s, "
          f"shutdown {init['shutdown_s']:.2f} s, whole process {init['process_s']:.2f} s")
    driver = report.get("driver")
    if driver:
        if "hf_replicas" in driver:
            h = driver["hf_replicas"]
            print(f"hf model: loaded here in {h['local_load_s']:.2f} s; {h['workers']} replica(s) ready in {h['replicas_ready_s']:.2f} s")
        for label, d in [("no Ray", driver["no_ray"]), *((f"{w} replica(s)", d) for w, d in driver["ray"].items())]:
            ready = f", replicas ready in {d['replicas_ready_s']:.2f} s" if "replicas_ready_s" in d else ""
            print(f"driver, {label}: {d['requests_per_s']:,.0f} requests/s; Store.cache_put {d['cache_put_s']:.3f} s in "
                  f"{d['cache_put_calls']} calls ({d['cache_put_share']:.0%} of the wall time, "
                  f"{d['cache_put_rows_per_s'] or 0:,.0f} rows/s), release {d['release_s']:.3f} s{ready}")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
