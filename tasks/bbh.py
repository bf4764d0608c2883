"""BIG-Bench Hard (Suzgun et al. 2022), as lm-evaluation-harness 0.4.13's `bbh_cot_fewshot_<subtask>`.

lm_eval/tasks/bbh/cot_fewshot/_cot_fewshot_template_yaml (version "4.0") and one YAML per subtask:
the subtask's description, then its 3 inline chain-of-thought exemplars (`first_n`), each

    Q: <input>
    A: Let's think step by step.
    <reasoning ending in "So the answer is X.">

(target_delimiter "", fewshot_delimiter "\\n\\n"), then "Q: <input>\\nA: Let's think step by step.\\n".
Greedy generation until "</s>", "Q" or "\\n\\n", at most 1024 new tokens. Filter `get-answer`: regex
`(?<=the answer is )(.*)(?=.)` then take_first; exact_match with no options against the target;
metric `exact_match,get-answer`.

Groups `bbh` (lm-eval's _bbh.yaml) and `bbh_cot_fewshot` (_bbh_cot_fewshot.yaml): the same 27
subtasks, exact_match weighted by subtask size, as lm-eval's aggregate_metric_list.

The exemplars are stored in bbh_cot_prompts.json (made once from lm-eval's YAML by
fixtures/bbh/make_bbh.py); lm-eval is never imported here. Data: the hub dataset lm-eval 0.4.13
reads (`SaylorTwift/bbh`, one config per subtask, split test, schema {input, target}), a mirror
(`bbh/<subtask>.jsonl`), or the fixture: 3 BIG-bench items per subtask, reformatted as BBH, for 24
from BIG-bench's task JSONs and for boolean_expressions, multistep_arithmetic_two and web_of_lies made
by BIG-bench's own generators (see fixtures/ATTRIBUTION.md).

Deliberate difference: generations are cut at the stop sequences before filtering (as for every
generate task, see harness.taskkit.formats).
"""

from __future__ import annotations

import json
from functools import cache, partial
from pathlib import Path

from harness.core.resources import package_dir
from harness.core.task import Dataset, Group, Task
from harness.scoring.filters import FilterPipeline
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import GenerateFormat, PromptFormat, cached_load, generate_until_task
from harness.tasks import register_group, register_task_factory

VERSION = "4.0"
DEFAULT_FEWSHOT = 3
HUB_ID = "SaylorTwift/bbh"
HUB_REVISION = "main"  # lm-eval pins none; a run records the resolved source
PROMPTS_FILE = "bbh_cot_prompts.json"
STOP = ("</s>", "Q", "\n\n")
MAX_GEN_TOKS = 1024
GET_ANSWER = FilterPipeline("get-answer", r"(?<=the answer is )(.*)(?=.)")

# lm_eval/tasks/bbh/cot_fewshot/_bbh.yaml task list, in order.
SUBTASKS: tuple[str, ...] = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies", "word_sorting",
)


def task_name(subtask: str) -> str:
    return f"bbh_cot_fewshot_{subtask}"


@cache
def prompts() -> dict[str, dict]:
    """{subtask: {"description": str, "shots": [{"input", "target"}] * 3}}, lm-eval's YAML verbatim."""
    return json.loads((package_dir("harness.tasks") / PROMPTS_FILE).read_text(encoding="utf-8"))


def doc_to_text(doc: dict) -> str:
    return f"Q: {doc['input']}\nA: Let's think step by step.\n"


def doc_to_target(doc: dict) -> str:
    return doc["target"]


def generate_format(subtask: str) -> GenerateFormat:
    prompt = PromptFormat(doc_to_text=doc_to_text, description=prompts()[subtask]["description"],
                          target_delimiter="", sampler="first_n")
    return GenerateFormat(prompt=prompt, doc_to_target=doc_to_target, stop=STOP, filters=(GET_ANSWER,), max_tokens=MAX_GEN_TOKS)


# --- data --------------------------------------------------------------------------------------


def _row(r: dict) -> dict:
    return {"input": r["input"], "target": r["target"]}


def shots(subtask: str) -> list[dict]:
    return [_row(s) for s in prompts()[subtask]["shots"]]


def dir_loader(subtask: str, root: Path) -> tuple[list[dict], list[dict]]:
    return files.read_jsonl(root / "bbh" / f"{subtask}.jsonl", _row), shots(subtask)


def hub_loader(subtask: str, load) -> tuple[list[dict], list[dict]]:
    return [_row(r) for r in load("test")], shots(subtask)


def load(subtask: str) -> Dataset:
    return cached_load(task_name(subtask), dir_loader=partial(dir_loader, subtask),
                       hub=HubSpec(HUB_ID, HUB_REVISION, name=subtask), hub_loader=partial(hub_loader, subtask))


# --- registration ------------------------------------------------------------------------------


def make_task(subtask: str) -> Task:
    return generate_until_task(
        task_name(subtask), VERSION, generate_format(subtask), partial(load, subtask), default_fewshot=DEFAULT_FEWSHOT,
        tags=("bbh", "chain_of_thought"), description=f"BBH {subtask.replace('_', ' ')}, lm-eval {task_name(subtask)} (3-shot CoT)",
    )


def _register() -> None:
    for subtask in SUBTASKS:
        register_task_factory(task_name(subtask), partial(make_task, subtask))
    members = tuple(task_name(s) for s in SUBTASKS)
    register_group(Group("bbh", members, weight_by_size=True, description="BIG-Bench Hard, 27 subtasks, 3-shot CoT"))
    register_group(Group("bbh_cot_fewshot", members, weight_by_size=True, description="BIG-Bench Hard, 27 subtasks, 3-shot CoT"))


_register()
