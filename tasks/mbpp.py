"""MBPP (Austin et al. 2021), as lm-evaluation-harness 0.4's `mbpp` (lm_eval/tasks/mbpp/mbpp.yaml).

The 500-problem test split (task_ids 11..510 of the full set), 3-shot with the fixed exemplars
task_ids 2, 3, 4 (lm-eval's `list_fewshot_samples`, first_n), each shot rendered as

    You are an expert Python programmer, and here is your task: <text> Your code should pass these tests:
    <blank line>
    <test 1>
    <test 2>
    <test 3>
    [BEGIN]
    <code>
    [DONE]

joined by a blank line, followed by the problem in the same form up to "[BEGIN]\\n". Greedy
generation until "[DONE]" (256 new tokens, lm-eval's default). No post-processing besides the
stop sequence: the program is the completion, and the test is the problem's three asserts
(`test_list`, as lm-eval's reference; `test_setup_code` is not used, as in lm-eval), run in the
run's sandbox (harness.scoring.code). Metrics: pass@1 (and pass@k, k in (10, 100), k <= n).

The asserts call the function by its own name; they are wrapped in `_mbpp_tests()`, the entry
point that the sandbox driver hands to `check(candidate)` (see `check_code`).
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UsageError
from harness.core.requests import Generate, Response
from harness.core.task import Dataset, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring import code as code_eval
from harness.taskkit import files
from harness.taskkit.formats import cached_load
from harness.tasks import register_task

VERSION = "1.0"
STOP = ("[DONE]",)
MAX_TOKENS = 256
KS = (1, 10, 100)
TEST_IDS = range(11, 511)
FEWSHOT_IDS = (2, 3, 4)
ENTRY_POINT = "_mbpp_tests"
FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")


def read_rows(path: Path) -> dict[int, dict]:
    rows = files.read_jsonl(path, lambda r: {k: r[k] for k in FIELDS})
    return {r["task_id"]: r for r in rows}


def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    rows = read_rows(root / "mbpp" / "mbpp.jsonl")
    return [rows[i] for i in TEST_IDS if i in rows], [rows[i] for i in FEWSHOT_IDS]


def load() -> Dataset:
    # No pinned hub revision: a mirror (HARNESS_DATA_DIR) or the fixture, which holds the whole test split.
    return cached_load("mbpp", dir_loader=dir_loader, hub=None, hub_loader=None)


def doc_to_text(doc: dict) -> str:
    tests = "\n".join(doc["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def prompt_for(doc: dict, shots: list[dict]) -> str:
    # target_delimiter "" and lm-eval's fewshot_delimiter "\n\n"; a shot's target is its code + "\n[DONE]".
    return "".join(doc_to_text(s) + s["code"] + "\n[DONE]" + "\n\n" for s in shots) + doc_to_text(doc)


def check_code(doc: dict) -> str:
    """The asserts as `_mbpp_tests()`, run by a `check(candidate)` that first puts back a `check` the
    solution defined itself (MBPP 56 and 349 name their function `check`)."""
    body = "\n".join("    " + t for t in doc["test_list"][:3])
    return ("_mbpp_solution_check = globals().get(\"check\")\n\n\n"
            f"def _mbpp_tests():\n{body}\n\n\n"
            "def check(candidate):\n"
            "    if _mbpp_solution_check is not None:\n"
            "        globals()[\"check\"] = _mbpp_solution_check\n"
            "    candidate()\n")


def build(dataset: Dataset, limit: int | None, num_fewshot: int, seed: int, *, n: int, temperature: float) -> list[Instance]:
    docs = dataset.docs if limit is None else dataset.docs[:limit]
    if num_fewshot > len(dataset.fewshot_docs):
        raise UsageError(f"mbpp: at most {len(dataset.fewshot_docs)} few-shot exemplars (tasks 2, 3, 4)")
    shots = dataset.fewshot_docs[:num_fewshot]
    instances = []
    for doc_id, doc in enumerate(docs):
        prompt = prompt_for(doc, shots)
        request = Generate(prompt=prompt, stop=STOP, max_tokens=MAX_TOKENS, temperature=temperature, n=n,
                           seed=seed if temperature > 0 else None, doc_key=str(doc["task_id"]))
        instances.append(Instance(doc_id, doc, prompt, "\n".join(doc["test_list"][:3]), (request,)))
    return instances


def score(instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    test = check_code(instance.doc)
    return code_eval.score_completions(list(responses[0]), STOP,
                                       lambda completion: code_eval.Program(completion, test, ENTRY_POINT), KS, context.sandbox)


def mbpp_task(name: str = "mbpp", n: int = 1, temperature: float = 0.0) -> Task:
    if n < 1 or (n > 1 and temperature <= 0):
        raise ValueError("mbpp: n >= 1, and n > 1 needs temperature > 0")
    return Task(
        name=name, version=VERSION, load=load,
        build=lambda ds, limit, shots, seed: build(ds, limit, shots, seed, n=n, temperature=temperature),
        score=score, metrics=tuple(MetricSpec(f"pass@{k}") for k in KS if k <= n),
        default_fewshot=3, tags=("code", code_eval.EXECUTES_CODE), request_kinds=("generate",),
        description=f"MBPP test split (500 problems), lm-eval mbpp 3-shot, n={n}, temperature={temperature}, sandboxed",
    )


@register_task("mbpp")
def mbpp() -> Task:
    return mbpp_task()
