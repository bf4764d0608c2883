"""Requests per second of each backend on the same requests, side by side.

The embedded SmolLM2-135M-Instruct on every backend: `hf` (float32 torch), `gguf` (the Q4_1 GGUF
in llama.cpp), `openai` over tests.servers.logprob_server (the hf model behind HTTP), and
`openai` over llama_cpp.server (generation only: its prompt logprobs are off by one, so the
openai backend's probe refuses them). Two workloads: HellaSwag loglikelihoods (4 per document)
and greedy GSM8K generations (5-shot, up to 256 tokens). Model load and server start-up are not
timed; every backend gets the same requests and CPU threads.

    .venv/bin/python -m benchmarks.backends [--hellaswag 100] [--gsm8k 5] [--threads 2]
        [--data ../shared/data] [--concurrency 4] [--only hf,gguf,...]

HellaSwag documents come from the data kit (../shared/data) when present, else from the shipped
fixture (50 documents). An openai row is skipped, with the reason, when its server module is
missing or does not start. Besides speed, each row says how close its answers are to hf's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import tasks as catalog
from harness.backends import embedded
from harness.backends.base import Backend, make_backend, parse_model_spec
from harness.core.requests import LoglikelihoodResult
from harness.taskkit.data import forced_source

REPO = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 180.0
BACKENDS = ("hf", "gguf", "openai-logprob-server", "openai-llama-cpp-server")
REFERENCES = ("hf", "gguf")  # the in-process rows that later rows' answers are compared with


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # loglikelihood | generate
    requests: tuple


@dataclass
class Row:
    backend: str
    workload: str
    requests: int
    seconds: float | None  # None: skipped
    note: str  # fidelity against hf, or why the row was skipped

    @property
    def rate(self) -> float | None:
        return self.requests / self.seconds if self.seconds else None


# -- workloads ----------------------------------------------------------------------------------


def task_requests(name: str, limit: int, source: str) -> tuple:
    task = catalog.get_task(name)
    with forced_source(source):
        dataset = task.load()
    return tuple(r for inst in task.build(dataset, limit, task.default_fewshot, 1234) for r in inst.requests)


def workloads(hellaswag: int, gsm8k: int, data: Path | None) -> list[Workload]:
    source = "fixture"
    if data is not None and (data / "hellaswag").is_dir():
        os.environ["HARNESS_DATA_DIR"] = str(data)
        source = "mirror"
    docs = hellaswag if source == "mirror" else min(hellaswag, 50)
    return [Workload(f"hellaswag x{docs} (loglikelihood)", "loglikelihood", task_requests("hellaswag", docs, source)),
            Workload(f"gsm8k x{gsm8k} (greedy, 5-shot)", "generate", task_requests("gsm8k", gsm8k, source))]


# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server did not answer within {SERVER_START_TIMEOUT_S:.0f} s")


@contextmanager
def server(command: list[str], port: int, log: Path) -> Iterator[str]:
    """Starts a server process, yields its base URL once it answers, and stops it afterwards."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def logprob_server_command(port: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "tests.servers.logprob_server", "--model", embedded.EMBEDDED_ALIAS,
            "--model-name", "smollm2", "--port", str(port), "--threads", str(threads)]


def llama_cpp_server_command(port: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded.gguf_path()), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
            "--n_threads_batch", str(threads)]


def module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# -- timing -------------------------------------------------------------------------------------


def answer_all(backend: Backend, workload: Workload) -> tuple[list, float]:
    """All answers in request order and the seconds they took (model loading excluded)."""
    method: Callable = getattr(backend, workload.kind)
    backend.check({workload.kind})  # a server backend asks its server first (not timed)
    if hasattr(backend, "load"):
        backend.load()
    started = time.perf_counter()
    answers = dict(method(list(workload.requests), lambda n: None))
    seconds = time.perf_counter() - started
    return [answers[i] for i in range(len(workload.requests))], seconds


def fidelity(workload: Workload, answers: Sequence, references: dict[str, list]) -> str:
    """How close the answers are to hf's (and, for generations, to in-process gguf's)."""
    if not references:
        return "reference"
    if workload.kind == "loglikelihood":
        reference = references.get("hf")
        if reference is None:
            return "-"
        deltas = [abs(a.logprob - b.logprob) for a, b in zip(answers, reference)
                  if isinstance(a, LoglikelihoodResult) and isinstance(b, LoglikelihoodResult)]
        return f"max |Δll| vs hf {max(deltas):.3f}"
    return "; ".join(f"{sum(a == b for a, b in zip(answers, reference))}/{len(answers)} outputs identical to {name}"
                     for name, reference in references.items())


def measure(name: str, spec: str, model_args: str, items: list[Workload], answers_by: dict[str, dict[str, list]]) -> list[Row]:
    """Times each workload on one backend; `answers_by[backend][workload]` collects the reference
    rows' answers that later rows are compared with."""
    backend = make_backend(parse_model_spec(spec, model_args))
    rows = []
    try:
        for workload in items:
            answers, seconds = answer_all(backend, workload)
            references = {other: got[workload.name] for other, got in answers_by.items() if workload.name in got}
            rows.append(Row(name, workload.name, len(workload.requests), seconds, fidelity(workload, answers, references)))
            if name in REFERENCES:
                answers_by.setdefault(name, {})[workload.name] = answers
    finally:
        backend.close()
    return rows


def skipped(name: str, items: list[Workload], why: str) -> list[Row]:
    return [Row(name, w.name, len(w.requests), None, f"skipped: {why}") for w in items]


def run_server_backend(name: str, command: list[str], port: int, items: list[Workload], answers_by: dict, concurrency: int,
                       log_dir: Path) -> list[Row]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    try:
        with server(command, port, log) as base_url:
            args = f"concurrency={concurrency},timeout=600"
            if "llama_cpp.server" in command:  # its default repeat_penalty 1.1 is not greedy
                args += ",body.repeat_penalty=1.0"
            return measure(name, f"openai:smollm2@{base_url}", args, items, answers_by)
    except RuntimeError as error:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        return skipped(name, items, f"{error}{': ' + tail[0] if tail else ''}")


# -- report -------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    hf_rate = {r.workload: r.rate for r in rows if r.backend == "hf"}
    lines = [f"{'backend':<26} {'workload':<34} {'requests':>8} {'seconds':>9} {'req/s':>8} {'x hf':>6}  answers"]
    for r in rows:
        if r.seconds is None:
            lines.append(f"{r.backend:<26} {r.workload:<34} {r.requests:>8} {'-':>9} {'-':>8} {'-':>6}  {r.note}")
            continue
        base = hf_rate.get(r.workload)
        ratio = f"{r.rate / base:.2f}" if base else "-"
        lines.append(f"{r.backend:<26} {r.workload:<34} {r.requests:>8} {r.seconds:>9.2f} {r.rate:>8.2f} {ratio:>6}  {r.note}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hellaswag", type=int, default=100, help="HellaSwag documents (4 requests each)")
    parser.add_argument("--gsm8k", type=int, default=5, help="GSM8K greedy generations")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads per backend")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight for the openai rows")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data kit (else the fixtures)")
    parser.add_argument("--only", default=",".join(BACKENDS), help=f"comma-separated subset of {', '.join(BACKENDS)}")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"), help="where server logs go")
    args = parser.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]

    items = workloads(args.hellaswag, args.gsm8k, args.data)
    generation = [w for w in items if w.kind == "generate"]
    answers_by: dict[str, dict[str, list]] = {}
    rows: list[Row] = []
    # hf first: it is the reference the other rows' answers are compared with
    if "hf" in chosen:
        rows += measure("hf", f"hf:{embedded.EMBEDDED_ALIAS}", "", items, answers_by)
    if "gguf" in chosen:
        if module_available("llama_cpp"):
            rows += measure("gguf", "gguf:embedded", f"n_threads={args.threads}", items, answers_by)
        else:
            rows += skipped("gguf", items, "llama_cpp is not installed")
    if "openai-logprob-server" in chosen:
        if module_available("tests.servers.logprob_server") and module_available("harness.backends.openai.backend"):
            port = free_port()
            rows += run_server_backend("openai-logprob-server", logprob_server_command(port, args.threads), port, items,
                                       answers_by, args.concurrency, args.logs)
        else:
            rows += skipped("openai-logprob-server", items, "tests.servers.logprob_server or the openai backend is missing")
    if "openai-llama-cpp-server" in chosen:
        if module_available("llama_cpp.server") and module_available("harness.backends.openai.backend"):
            port = free_port()
            rows += run_server_backend("openai-llama-cpp-server", llama_cpp_server_command(port, args.threads), port,
                                       generation, answers_by, args.concurrency, args.logs)
        else:
            rows += skipped("openai-llama-cpp-server", generation, "llama_cpp.server or the openai backend is missing")
    print(f"SmolLM2-135M-Instruct, {args.threads} CPU thread(s) per backend; load and server start-up not timed")
    print(table(rows))


if __name__ == "__main__":
    main()
