"""`harness bench`: serving performance (TTFT, TPOT, ITL, throughput, goodput) of a server or a model.

Prints a table per load level as it finishes and a summary of the sweep, stores every request's
timeline in the results database, and optionally writes a JSON summary. Metric definitions:
docs/bench.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.cli.options import DbOption, check_output_file, db_path
from harness.core.errors import UsageError

STAT_ROWS = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2E", "e2e_ms"))

commands = typer.Typer()


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{option} expects comma-separated integers, e.g. 1,4,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} expects positive integers, got {text!r}")
    return values


def _rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(math.inf if x.strip().lower() == "inf" else float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--rate expects comma-separated requests/s (or inf), e.g. 1,4,inf; got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise UsageError(f"--rate values must be positive, got {text!r}")
    return values


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def level_table(s: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric (ms)")
    for name in ("mean", "std", "p50", "p90", "p95", "p99", "n"):
        table.add_column(name, justify="right")
    for label, key in STAT_ROWS:
        st = s[key]
        table.add_row(label, *(_ms(st[k]) for k in ("mean", "std", "p50", "p90", "p95", "p99")), str(st["n"]))
    return table


def level_lines(s: dict) -> list[str]:
    lines = [f"requests {s['completed']} completed, {s['failed']} failed in {s['duration_s']:.2f} s; "
             f"{s['requests_per_s']:.2f} req/s, {s['output_tokens_per_s']:.1f} output tok/s, "
             f"{s['total_tokens_per_s']:.1f} total tok/s; tokens {s['input_tokens']} in / {s['output_tokens']} out "
             f"(counted by {s['token_source']})"]
    if s["goodput_requests_per_s"] is not None:
        lines.append(f"goodput {s['goodput_requests_per_s']:.2f} req/s ({100 * s['slo_attainment']:.1f}% of requests met every SLO)")
    if s["cost_per_million_output_tokens"] is not None:
        lines.append(f"cost ${s['cost_per_million_output_tokens']:.4f} per million output tokens")
    if s["peak_memory_mb"] is not None:
        lines.append(f"peak memory {s['peak_memory_mb']:.0f} MiB")
    for error, count in s["errors"].items():
        lines.append(f"[yellow]{count} failed: {error}[/yellow]")
    return lines


def sweep_table(levels: list) -> Table:
    table = Table(title="sweep", title_justify="left")
    for name in ("level", "ok", "failed", "req/s", "out tok/s", "goodput", "TTFT p50", "TTFT p99", "TPOT p50",
                 "ITL p99", "E2E p50"):
        table.add_column(name, justify="right" if name != "level" else "left")
    for lv in levels:
        s = lv.as_json()
        table.add_row(lv.label, str(s["completed"]), str(s["failed"]), f"{s['requests_per_s']:.2f}",
                      f"{s['output_tokens_per_s']:.1f}",
                      "-" if s["goodput_requests_per_s"] is None else f"{s['goodput_requests_per_s']:.2f}",
                      _ms(s["ttft_ms"]["p50"]), _ms(s["ttft_ms"]["p99"]), _ms(s["tpot_ms"]["p50"]),
                      _ms(s["itl_ms"]["p99"]), _ms(s["e2e_ms"]["p50"]))
    return table


def _progress_factory(console: Console, enabled: bool):
    """A rich progress bar per level; None when disabled (tests, logs, --no-progress)."""
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)

    def factory(level, total: int | None) -> Callable:
        label = f"concurrency {level.concurrency}" if level.rate is None else f"rate {level.rate:g}/s"
        task = progress.add_task(label, total=total)
        return lambda outcome: progress.advance(task)

    return progress, factory


@commands.command()
def bench(
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL, e.g. http://host:8000/v1"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="model name the server serves (default: its only one)"),
    model: Optional[str] = typer.Option(None, "--model", help="in-process model: hf:PATH_OR_ID, gguf:PATH.gguf, vllm:PATH_OR_ID"),
    model_args: Optional[str] = typer.Option(None, "--model-args", help="key=value,... for the in-process model"),
    api: str = typer.Option("completions", "--api", help="completions | chat (endpoint only)"),
    concurrency: str = typer.Option("1", "--concurrency", help="sweep of fixed concurrencies, e.g. 1,4,16,64"),
    rate: Optional[str] = typer.Option(None, "--rate", help="sweep of request rates per second (Poisson; inf = all at once)"),
    burstiness: float = typer.Option(1.0, "--burstiness", help="gamma shape of arrival gaps: 1 Poisson, <1 burstier"),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", min=1, help="cap on in-flight requests with --rate"),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", help="requests per level (default 200 without --duration)"),
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds per level: no request starts after it"),
    input_len: int = typer.Option(512, "--input-len", help="prompt tokens (random dataset)"),
    output_len: Optional[int] = typer.Option(None, "--output-len", help="max_tokens per request (default 128; ShareGPT: the reply's length)"),
    range_ratio: float = typer.Option(0.0, "--range-ratio", help="random dataset: lengths uniform in [1-r, 1+r] x the given ones"),
    dataset: str = typer.Option("random", "--dataset", help="random | task:NAME | sharegpt:PATH"),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="generate exactly max_tokens (server must support ignore_eos)"),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="uncounted requests before each level (default: one per concurrent stream)"),
    slo: Optional[str] = typer.Option(None, "--slo", help="goodput SLOs in ms, e.g. ttft=500,tpot=50[,e2e=5000]"),
    gpu_cost_per_hour: Optional[float] = typer.Option(None, "--gpu-cost-per-hour", help="USD per hour, for cost per million output tokens"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer for prompts and for token counts when the server reports no usage"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="bearer token (default: $OPENAI_API_KEY)"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds a request may take before it counts as failed"),
    seed: int = typer.Option(0, "--seed"),
    tag: list[str] = typer.Option([], "--tag", help="tag the benchmark (repeatable)"),
    db: Optional[Path] = DbOption,
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the summary per level as JSON"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Benchmark serving: TTFT, TPOT, ITL, E2E, throughput and goodput per load level."""
    from harness.bench.metrics import parse_slo
    from harness.bench.runner import Bench, BenchConfig

    check_output_file(json_path, "--json")
    if rate is not None and concurrency != "1":
        raise UsageError("--concurrency sweeps closed-loop levels; with --rate use --max-concurrency N as the cap")
    if output_len is not None and output_len < 1:
        raise UsageError("--output-len must be at least 1")
    try:
        parsed_slo = parse_slo(slo)
    except ValueError as exc:
        raise UsageError(f"--slo: {exc}") from None
    if endpoint is None and model is None:
        from harness.core.config import DEFAULT_MODEL

        model = DEFAULT_MODEL
    config = BenchConfig(
        endpoint=endpoint, model_name=model_name, model=model, model_args=model_args, api=api,
        concurrency=_ints(concurrency, "--concurrency"), rates=_rates(rate) if rate else None, burstiness=burstiness,
        max_concurrency=max_concurrency, num_prompts=num_prompts if num_prompts is not None or duration else 200,
        duration_s=duration, input_len=input_len, output_len=output_len, dataset=dataset, range_ratio=range_ratio,
        ignore_eos=ignore_eos, warmup=warmup, slo=parsed_slo, gpu_cost_per_hour=gpu_cost_per_hour, seed=seed,
        tokenizer=tokenizer, api_key=api_key or os.environ.get("OPENAI_API_KEY"), timeout_s=timeout, tags=tuple(tag))
    console = Console(width=200 if not Console().is_terminal else None)
    progress, factory = _progress_factory(console, not no_progress)

    def on_level(summary) -> None:
        s = summary.as_json()
        if progress is not None:
            progress.refresh()
        console.print(level_table(s, summary.label))
        for line in level_lines(s):
            console.print(line, highlight=False)

    runner = Bench(config, db_path(db))
    try:
        if progress is not None:
            with progress:
                result = runner.run(on_level, factory)
        else:
            result = runner.run(on_level, None)
    except KeyboardInterrupt:
        if runner.bench_id:
            typer.echo(f"harness: interrupted; benchmark {runner.bench_id} is stored as failed with the levels it finished",
                       err=True)
        raise
    console.print(sweep_table(result.levels))
    typer.echo(f"bench {result.bench_id}: {len(result.levels)} levels, token counts from {result.token_count_source}; "
               f"stored in {db_path(db)}")
    if json_path is not None:
        json_path.write_text(json.dumps(summary_json(result, config), indent=2))


def summary_json(result, config) -> dict:
    return {"bench_id": result.bench_id, "target": config.target(), "model": config.model_name or config.model,
            "backend": result.describe.get("backend"), "api": config.api if config.endpoint else None,
            "dataset": config.dataset, "input_len": config.input_len, "output_len": config.output_len,
            "token_count_source": result.token_count_source, "tokenizer": result.tokenizer,
            "slo": config.slo.as_dict(), "gpu_cost_per_hour": config.gpu_cost_per_hour, "hardware": result.hardware,
            "levels": [lv.as_json() for lv in result.levels]}
