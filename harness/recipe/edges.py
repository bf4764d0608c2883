"""The regression report of each parent -> child edge of a recipe.

Every checkpoint of the recipe runs the recipe's evaluation (one stored run each, tagged
`recipe:<id>`, resumable). Then, per edge:
- the paired comparison of the child's run against the parent's (harness.decisions.compare) and
  the gate verdict under the recipe's policy;
- distribution fidelity against the parent on the recipe's token corpus (KLD, same top p,
  delta-p, PPL ratio; harness.run.fidelity) where both backends give full next-token
  distributions;
- size (bytes, bits per weight) and speed (prompt and decode tokens/s through the in-process
  bench, harness.bench), measured once per checkpoint.
The report is stored in `edge_reports` keyed by (child, parent, recipe id); one already there is
kept, so a resumed recipe does not measure twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.core.config import RayOptions, RunConfig
from harness.core.errors import UsageError
from harness.recipe.spec import Recipe, Speed
from harness.store import artifacts, lineage
from harness.store.artifacts import Artifact
from harness.store.db import Store

log = logging.getLogger("harness.recipe")
FULL_DISTRIBUTION = ("hf", "hf-adapter", "hf-torchao", "gguf")  # formats whose backends give token_logprobs
TOP_FLIPS = 10


def evaluate_checkpoints(recipe: Recipe, rid: str, ids: list[str], db_path: Path, show_progress: bool,
                         ray: RayOptions | None = None) -> dict[str, str]:
    """artifact id -> the run id of the recipe's evaluation of it (a complete one of this recipe id is kept).
    With `ray` the checkpoints are evaluated concurrently, each on replicas of its own."""
    from harness.run.parallel import evaluate_models

    runs = _finished_runs(rid, db_path)
    todo = [a for a in ids if a not in runs]
    configs = [RunConfig(tasks=recipe.evaluate.selections(), model=f"artifact:{a}", seed=recipe.seed,
                         tags=[f"recipe:{rid}"], suite=None, show_progress=show_progress and ray is None, ray=ray)
               for a in todo]
    for artifact_id, outcome in zip(todo, evaluate_models(configs, db_path) if configs else []):
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        runs[artifact_id] = outcome.result.run_id
    return runs


def _finished_runs(rid: str, db_path: Path) -> dict[str, str]:
    store = Store(db_path)
    try:
        frame = store.runs(tag=f"recipe:{rid}")
    finally:
        store.close()
    done = frame[(frame["status"] == "complete") & frame["model"].str.startswith("artifact:")] if not frame.empty else frame
    return {str(m).removeprefix("artifact:"): str(r) for m, r in zip(done.get("model", []), done.get("run_id", []))}


def _gate(store: Store, recipe: Recipe, run_parent: str, run_child: str) -> tuple[dict, dict]:
    from harness.decisions.compare import compare_runs, comparison_to_dict
    from harness.decisions.gate import decide

    comparison = compare_runs(store, run_parent, run_child, seed=recipe.seed)
    compared = comparison_to_dict(comparison)
    compared["flips"] = compared["flips"][:TOP_FLIPS]
    compared["n_flips"] = len(comparison.flips)
    compared.pop("loglikelihood", None)  # per-choice arrays: read them from the runs
    try:
        verdict = decide(comparison, recipe.gate)
    except UsageError as error:  # e.g. fewer paired documents than the policy's min_samples
        return compared, {"passed": True, "skipped": str(error), "decisions": []}
    decisions = [{"task": d.task, "metric": d.metric, "status": d.status, "drop_points": d.drop_points,
                  "tolerance": d.tolerance, "p_adjusted": d.p_adjusted, "reason": d.reason} for d in verdict.decisions]
    return compared, {"passed": verdict.passed, "decisions": decisions, "skipped_tasks": verdict.skipped}


def _open(artifact: Artifact) -> Any:
    from harness.backends.base import make_backend, parse_model_spec

    return make_backend(parse_model_spec(artifact.model_spec))


def fidelity(recipe: Recipe, parent: Artifact, child: Artifact) -> dict | None:
    if recipe.fidelity is None or parent.format not in FULL_DISTRIBUTION or child.format not in FULL_DISTRIBUTION:
        return None
    from harness.run.fidelity import corpus_tokens, measure_fidelity
    from harness.tasks.corpora import corpus_text

    text, digest = corpus_text(recipe.fidelity.corpus)
    base, other = _open(parent), _open(child)
    try:
        tokens = corpus_tokens(base, text)
        summary = measure_fidelity(base, other, tokens, recipe.fidelity.n_ctx, recipe.fidelity.windows)
    finally:
        base.close()
        other.close()
    return {**summary, "corpus": recipe.fidelity.corpus, "corpus_sha256": digest}


def speed(artifact: Artifact, settings: Speed | None, db_path: Path, rid: str) -> dict | None:
    """Prompt and decode tokens/s of one checkpoint through the in-process bench (one stream)."""
    if settings is None:
        return None
    from harness.bench.runner import Bench, BenchConfig

    config = BenchConfig(model=artifact.model_spec, num_prompts=settings.prompts, input_len=settings.input_len,
                         output_len=settings.output_len, ignore_eos=True, warmup=1, concurrency=(1,),
                         tags=(f"recipe:{rid}", f"artifact:{artifact.short_id}"))
    level = Bench(config, db_path).run().levels[0]
    ttft_s = level.ttft_ms.mean / 1000 if level.ttft_ms.mean else None
    tpot_s = level.tpot_ms.mean / 1000 if level.tpot_ms.mean else None
    return {"prompt_tokens_per_s": (level.input_tokens / level.requests) / ttft_s if ttft_s else None,
            "decode_tokens_per_s": 1 / tpot_s if tpot_s else None,
            "output_tokens_per_s": level.output_tokens_per_s, "ttft_ms": level.ttft_ms.mean,
            "tpot_ms": level.tpot_ms.mean, "peak_memory_mb": level.peak_memory_mb, "prompts": settings.prompts,
            "input_len": settings.input_len, "output_len": settings.output_len}


def _size(parent: Artifact, child: Artifact) -> dict:
    return {"parent_bytes": parent.bytes, "child_bytes": child.bytes, "ratio": child.bytes / parent.bytes if parent.bytes else None,
            "parent_bits_per_weight": parent.bits_per_weight, "child_bits_per_weight": child.bits_per_weight,
            "child_parameters": child.parameters}


def report_edges(recipe: Recipe, result: Any, db_path: Path, show_progress: bool = True, on_report: Any = None,
                 ray: RayOptions | None = None) -> None:
    """Evaluate every checkpoint of `result` (a RecipeResult) and store a report per edge."""
    ids = list(dict.fromkeys(i for edge in result.edges for i in edge))
    runs = evaluate_checkpoints(recipe, result.recipe_id, ids, db_path, show_progress, ray)
    speeds: dict[str, dict | None] = {}
    for parent_id, child_id in result.edges:
        store = Store(db_path)
        try:
            kept = [r for r in lineage.edge_reports(store, child_id, parent_id) if r["recipe_id"] == result.recipe_id]
        finally:
            store.close()
        if kept:
            result.reports[(parent_id, child_id)] = kept[0]
            continue
        parent, child = artifacts.load(parent_id), artifacts.load(child_id)
        for artifact in (parent, child):
            if artifact.artifact_id not in speeds:
                speeds[artifact.artifact_id] = speed(artifact, recipe.speed, db_path, result.recipe_id)
        report = {"runs": {"parent": runs[parent_id], "child": runs[child_id]},
                  "fidelity": fidelity(recipe, parent, child), "size": _size(parent, child),
                  "speed": {"parent": speeds[parent_id], "child": speeds[child_id]}}
        store = Store(db_path)
        try:
            report["comparison"], report["gate"] = _gate(store, recipe, runs[parent_id], runs[child_id])
            lineage.save_edge_report(store, child_id, parent_id, result.recipe_id, report)
        finally:
            store.close()
        result.reports[(parent_id, child_id)] = {"recipe_id": result.recipe_id, **report}
        if on_report is not None:
            on_report(parent, child, report)
