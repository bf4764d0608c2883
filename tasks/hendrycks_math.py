"""MATH (Hendrycks et al. 2021), as lm-evaluation-harness 0.4.13's `hendrycks_math`.

lm_eval/tasks/hendrycks_math/hendrycks_math_algebra.yaml (version "1.0"), one task per subject,
`hendrycks_math_<subject>`, and utils.py (ported here, not imported): the prompt
"Problem: <problem>\\nAnswer:", 0-shot by default (few-shot: random draws from the train split,
target_delimiter " "), greedy generation until "Problem:". `exact_match` takes the response
between its first and last "$" (the whole response when it has fewer than two) and compares it
with the boxed gold answer after Hendrycks' `strip_string` normalisation (no sympy).

Group `hendrycks_math`: the 7 subjects, exact_match weighted by subject size. Data as
minerva_math: hub `EleutherAI/hendrycks_math` or a mirror `math/<config>/{test,train}.jsonl`; no
fixture (no MATH problems ship in any package checked).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from harness.core.requests import Response
from harness.core.task import Dataset, Group, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring.filters import truncate_at_stop
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import GenerateFormat, PromptFormat, build_generate, cached_load
from harness.tasks import register_group, register_task_factory
from harness.tasks.minerva_math import HUB_ID, HUB_REVISION, SUBJECTS, last_boxed_only_string, remove_boxed

VERSION = "1.0"
STOP = ("Problem:",)


def task_name(subject: str) -> str:
    return f"hendrycks_math_{subject}"


# --- strip_string and is_equiv (utils.py) ------------------------------------------------------


def fix_fracs(string: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}; unchanged when a \frac has < 2 characters after it."""
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b, post = substr[0], substr[1], substr[2:]
        new_str += "{" + a + "}{" + b + "}" + post if b != "{" else "{" + a + "}" + b + post
    return new_str


def fix_a_slash_b(string: str) -> str:
    r"""An integer fraction "3/4" -> \frac{3}{4}; utils.py raises ValueError for non-integers (caught by is_equiv)."""
    if len(string.split("/")) != 2:
        return string
    a, b = (int(part) for part in string.split("/"))
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        assert len(splits) == 2
        return splits[0]
    return string


def fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    return splits[0] + "".join("\\sqrt" + s if s[0] == "{" else "\\sqrt{" + s[0] + "}" + s[1:] for s in splits[1:])


def strip_string(string: str) -> str:
    for before, after in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                          ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        string = string.replace(before, after)
    string = remove_right_units(string)
    string = string.replace("\\%", "").replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = fix_sqrt(string).replace(" ", "")
    string = fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return fix_a_slash_b(string)


def is_equiv(str1: str | None, str2: str | None) -> bool:
    """Equal after strip_string; equal as raw strings when strip_string raises."""
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return strip_string(str1) == strip_string(str2)
    except Exception:
        return str1 == str2


def extract_answer(response: str) -> str:
    """Between the first and last "$", or the whole response."""
    dollars = [i for i, c in enumerate(response) if c == "$"]
    return response if len(dollars) <= 1 else response[dollars[0] + 1 : dollars[-1]]


# --- prompts, scoring, data --------------------------------------------------------------------


def doc_to_text(doc: dict) -> str:
    return f"Problem: {doc['problem']}\nAnswer:"


def doc_to_target(doc: dict) -> str:
    return doc["answer"]


FORMAT = GenerateFormat(prompt=PromptFormat(doc_to_text=doc_to_text, sampler="random"), doc_to_target=doc_to_target,
                        stop=STOP, filters=())


def score(instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    raw = responses[0]
    text = truncate_at_stop(raw if isinstance(raw, str) else str(raw[0]), STOP)  # type: ignore[index]
    answer = extract_answer(text)
    exact = is_equiv(answer, remove_boxed(last_boxed_only_string(instance.doc["solution"]) or ""))
    return Scored(metrics={"exact_match": float(exact)}, response=[raw] if isinstance(raw, str) else list(raw),  # type: ignore[arg-type]
                  extracted=answer)


def process_doc(row: dict) -> dict:
    return {"problem": row["problem"], "solution": row["solution"],
            "answer": remove_boxed(last_boxed_only_string(row["solution"]) or "")}


def dir_loader(config: str, root: Path) -> tuple[list[dict], list[dict]]:
    folder = root / "math" / config
    return files.read_jsonl(folder / "test.jsonl", process_doc), files.read_jsonl(folder / "train.jsonl", process_doc)


def hub_loader(load) -> tuple[list[dict], list[dict]]:
    return [process_doc(r) for r in load("test")], [process_doc(r) for r in load("train")]


def load(subject: str) -> Dataset:
    config = SUBJECTS[subject]
    return cached_load(task_name(subject), dir_loader=partial(dir_loader, config),
                       hub=HubSpec(HUB_ID, HUB_REVISION, name=config), hub_loader=hub_loader)


def make_task(subject: str) -> Task:
    return Task(
        name=task_name(subject), version=VERSION, load=partial(load, subject), build=partial(build_generate, FORMAT),
        score=score, metrics=(MetricSpec("exact_match"),), tags=("math_word_problems", "hendrycks_math"),
        description=f"MATH {SUBJECTS[subject].replace('_', ' ')}, lm-eval {task_name(subject)} (0-shot)",
        request_kinds=("generate",),
    )


def _register() -> None:
    for subject in SUBJECTS:
        register_task_factory(task_name(subject), partial(make_task, subject))
    register_group(Group("hendrycks_math", tuple(task_name(s) for s in SUBJECTS), weight_by_size=True,
                         description="MATH, 7 subjects, lm-eval hendrycks_math (0-shot)"))


_register()
