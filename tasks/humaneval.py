"""HumanEval (Chen et al. 2021), as lm-evaluation-harness 0.4's `humaneval` (lm_eval/tasks/humaneval).

Zero-shot; the prompt is the problem's `prompt` (signature + docstring) as it stands. Generation
until "\\nclass", "\\ndef", "\\n#", "\\nif" or "\\nprint", at most 1024 new tokens, greedy by
default (`humaneval_task(n=..., temperature=...)` builds a sampled variant). Post-processing as lm-eval's `build_predictions`:
the program is prompt + completion; its test is the problem's `test` (which defines
check(candidate)) run on `entry_point`, inside the run's sandbox (harness.scoring.code), never in
this process. Metrics: pass@1, and pass@k for the k in (10, 100) that do not exceed n, by the
unbiased estimator.

Deliberate difference: completions are cut at the stop sequences here too, so completions
replayed from a file are treated as a model's would be.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.requests import Generate, Response
from harness.core.task import Dataset, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring import code as code_eval
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import cached_load
from harness.tasks import register_task

VERSION = "1.0"
STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MAX_TOKENS = 1024
KS = (1, 10, 100)
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def read_jsonl_gz(path: Path) -> list[dict]:
    return files.read_jsonl(path, lambda r: {k: r[k] for k in FIELDS}, gzipped=True)


def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl_gz(root / "humaneval" / "HumanEval.jsonl.gz"), []


def hub_loader(load) -> tuple[list[dict], list[dict]]:
    return [{k: r[k] for k in FIELDS} for r in load("test")], []


# No pinned hub revision yet: documents come from a mirror (HARNESS_DATA_DIR) or the fixture, which is
# the complete published file. hub_loader reads the openai/openai_humaneval layout once a revision is pinned.
HUB: HubSpec | None = None


def load() -> Dataset:
    return cached_load("humaneval", dir_loader=dir_loader, hub=HUB, hub_loader=hub_loader)


def target(doc: dict) -> str:
    """lm-eval's doc_to_target: the test code and the call that runs it."""
    return f"{doc['test']}\ncheck({doc['entry_point']})"


def build(dataset: Dataset, limit: int | None, num_fewshot: int, seed: int, *, n: int, temperature: float) -> list[Instance]:
    docs = dataset.docs if limit is None else dataset.docs[:limit]
    instances = []
    for doc_id, doc in enumerate(docs):
        request = Generate(prompt=doc["prompt"], stop=STOP, max_tokens=MAX_TOKENS, temperature=temperature, n=n,
                           seed=seed if temperature > 0 else None, doc_key=str(doc["task_id"]))
        instances.append(Instance(doc_id, doc, doc["prompt"], target(doc), (request,)))
    return instances


def score(instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    doc = instance.doc

    def program(completion: str) -> code_eval.Program:
        return code_eval.Program(doc["prompt"] + completion, doc["test"], doc["entry_point"])

    return code_eval.score_completions(list(responses[0]), STOP, program, KS, context.sandbox)


def humaneval_task(name: str = "humaneval", n: int = 1, temperature: float = 0.0) -> Task:
    if n < 1 or (n > 1 and temperature <= 0):
        raise ValueError("humaneval: n >= 1, and n > 1 needs temperature > 0")
    return Task(
        name=name, version=VERSION, load=load,
        build=lambda ds, limit, shots, seed: build(ds, limit, shots, seed, n=n, temperature=temperature),
        score=score, metrics=tuple(MetricSpec(f"pass@{k}") for k in KS if k <= n),
        default_fewshot=0, tags=("code", code_eval.EXECUTES_CODE), request_kinds=("generate",),
        description=f"HumanEval (164 problems), lm-eval humaneval, n={n}, temperature={temperature}, executed in a sandbox",
    )


@register_task("humaneval")
def humaneval() -> Task:
    return humaneval_task()
