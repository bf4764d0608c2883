"""lm-evaluation-harness 0.4.13 on exactly the documents harness evaluates (the reference run).

lm-eval's own task objects are built from its shipped YAML with the dataset swapped for the
documents harness loaded from the same source (`custom_dataset`), so prompts, few-shot
examples and scoring are lm-eval's, and only the documents are shared. Used by the fidelity
test and by benchmarks/vs_lm_eval.py (as a separate process: `python -m benchmarks.lm_eval_reference`).

Wired here: HellaSwag, MMLU subjects, ARC (arc_easy, arc_challenge) and TruthfulQA's
loglikelihood tasks (truthfulqa_mc1, truthfulqa_mc2); their harness documents are already in
the hub's schema, so they go to lm-eval unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import datasets
import lm_eval
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from harness import tasks as catalog
from harness.taskkit.data import FIXTURE_DIR
from harness.tasks import hellaswag as hellaswag_task

LM_TASKS = Path(lm_eval.__file__).parent / "tasks"
FEWSHOT_SEED = 1234
ARC_YAML = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml"}
TRUTHFULQA_YAML = {"truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml", "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml"}


def _hellaswag_rows(limit: int | None) -> list[dict]:
    """Raw rows in hub schema, from the directory harness reads (mirror or fixture)."""
    root = Path(os.environ["HARNESS_DATA_DIR"]) if os.environ.get("HARNESS_DATA_SOURCE") == "mirror" else FIXTURE_DIR
    rows = []
    with open(root / hellaswag_task.VAL_FILE, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows.append(row if "ctx_a" in row else hellaswag_task.mirror_to_hub_row(row))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _task(yaml_path: str, splits: dict[str, list[dict]], num_fewshot: int) -> ConfigurableTask:
    config = load_yaml(LM_TASKS / yaml_path)
    dataset = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    config.update(custom_dataset=lambda **_: dataset, num_fewshot=num_fewshot)
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(FEWSHOT_SEED)
    return task


def build_tasks(names: list[str], num_fewshot: int | None, limit: int | None,
                limits: dict[str, int] | None = None) -> dict[str, ConfigurableTask]:
    """HARNESS_DATA_SOURCE (fixture | mirror) decides where the documents come from, as for harness.
    `limits` keeps the first n documents of the named arc_* / truthfulqa_* tasks (a per-task --limit)."""
    out: dict[str, ConfigurableTask] = {}
    for name in names:
        if name == "hellaswag":
            rows = _hellaswag_rows(limit)
            out[name] = _task("hellaswag/hellaswag.yaml", {"validation": rows, "train": rows}, num_fewshot or 0)
        elif name.startswith("mmlu_"):
            dataset = catalog.get_task(name).load()
            shots = 5 if num_fewshot is None else num_fewshot
            out[name] = _task(f"mmlu/default/{name}.yaml", {"test": dataset.docs, "dev": dataset.fewshot_docs}, shots)
        elif name in ARC_YAML or name in TRUTHFULQA_YAML:
            dataset = catalog.get_task(name).load()
            docs = dataset.docs[: (limits or {}).get(name)]
            splits = {"test": docs, "train": dataset.fewshot_docs} if name in ARC_YAML else {"validation": docs}
            out[name] = _task({**ARC_YAML, **TRUTHFULQA_YAML}[name], splits, num_fewshot or 0)
        else:
            raise ValueError(f"the reference runner wires hellaswag, mmlu_*, arc_* and truthfulqa_mc1/2 only, not {name}")
    return out


def run(pretrained: Path, names: list[str], limit: int | None, num_fewshot: int | None, batch_size: int,
        limits: dict[str, int] | None = None) -> dict:
    """Per-sample loglikelihoods and correctness, aggregates, and the seconds lm-eval spent."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    lm = HFLM(pretrained=str(pretrained), dtype="float32", batch_size=batch_size, device="cpu")
    loaded = time.perf_counter()
    results = evaluate(lm=lm, task_dict=build_tasks(names, num_fewshot, limit, limits), limit=limit, log_samples=True,
                       bootstrap_iters=0, verbosity="ERROR")
    finished = time.perf_counter()
    samples = {
        task: {str(s["doc_id"]): {"loglikelihoods": [float(r[0][0]) for r in s["resps"]],
                                  **{m: float(s[m]) for m in ("acc", "acc_norm") if m in s}}
               for s in rows}
        for task, rows in results["samples"].items()
    }
    aggregates = {task: {k.split(",")[0]: v for k, v in res.items() if k.split(",")[0] in ("acc", "acc_norm")}
                  for task, res in results["results"].items()}
    return {"samples": samples, "results": aggregates,
            "seconds": {"model_load": loaded - started, "evaluate": finished - loaded}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--num-fewshot", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = run(args.pretrained, args.tasks.split(","), args.limit, args.num_fewshot, args.batch_size)
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
