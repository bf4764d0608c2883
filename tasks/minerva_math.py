"""MATH (Hendrycks et al. 2021) with the Minerva prompt, as lm-evaluation-harness 0.4.13's `minerva_math`.

lm_eval/tasks/minerva_math/minerva_math_algebra.yaml (version "3.1"), one task per subject,
`minerva_math_<subject>`, and utils.py (ported here, not imported):

    Problem:
    <problem>

    Solution: <worked solution ending "Final Answer: The final answer is $X$. I hope it is correct.">

4-shot from the 4 fixed Minerva exemplars (`first_n`, target_delimiter " ", fewshot_delimiter
"\\n\\n"), greedy generation until "Problem:", at most 256 new tokens (lm-eval's HF default). The
gold `answer` is `normalize_final_answer(remove_boxed(last_boxed_only_string(solution)))`
(process_docs). Metrics, both per document:

- `exact_match`: the text after "Final Answer: The final answer is", normalised the same way,
  equal to the gold answer as strings, or sympy-equivalent (harness.scoring.math_equivalence,
  in a killable worker process with lm-eval's 5 s timeout);
- `math_verify`: math-verify's `verify(parse(solution), parse(response))`.

Group `minerva_math` (lm_eval/tasks/benchmarks/minerva_math.yaml): the 7 subjects, both metrics
weighted by subject size. Data: hub `EleutherAI/hendrycks_math` (one config per subject, test
split) or a mirror `math/<config>/test.jsonl` of rows {problem, solution, ...}; no MATH problems
ship in any package checked, so there is no fixture (see tasks/fixtures/ATTRIBUTION.md).

Deliberate difference: generations are cut at "Problem:" before scoring (lm-eval's model classes
do the same).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from harness.core.requests import Response
from harness.core.task import Dataset, Group, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring.filters import truncate_at_stop
from harness.scoring.math_equivalence import math_verify_equiv, sympy_equiv
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import GenerateFormat, PromptFormat, build_generate, cached_load
from harness.tasks import register_group, register_task_factory

VERSION = "3.1"
GROUP_VERSION = "1.0"
DEFAULT_FEWSHOT = 4
HUB_ID = "EleutherAI/hendrycks_math"
HUB_REVISION = "main"  # lm-eval pins none; a run records the resolved source
STOP = ("Problem:",)
INVALID_ANSWER = "[invalidanswer]"

# task suffix -> hub config (dataset_name), in lm-eval's group order
SUBJECTS: dict[str, str] = {
    "algebra": "algebra", "counting_and_prob": "counting_and_probability", "geometry": "geometry",
    "intermediate_algebra": "intermediate_algebra", "num_theory": "number_theory",
    "prealgebra": "prealgebra", "precalc": "precalculus",
}

# utils.list_fewshot_samples(), verbatim.
EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it is correct."),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."),
)


def task_name(subject: str) -> str:
    return f"minerva_math_{subject}"


def exemplar_docs() -> list[dict]:
    return [{"problem": p, "solution": s, "few_shot": "1"} for p, s in EXEMPLARS]


# --- answers (utils.py) ------------------------------------------------------------------------


def last_boxed_only_string(string: str) -> str | None:
    """The last `\\boxed{...}` (balanced braces) or `\\boxed ...` up to "$", or `\\fbox{...}`."""
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
        elif string[i] == "}":
            depth -= 1
            if depth == 0:
                return string[idx : i + 1]
    return None


def remove_boxed(s: str) -> str:
    """The inside of `\\boxed{...}` / after `\\boxed `; lm-eval asserts the shape (AssertionError)."""
    if "\\boxed " in s:
        assert s.startswith("\\boxed ")
        return s[len("\\boxed "):]
    assert s.startswith("\\boxed{") and s.endswith("}")
    return s[len("\\boxed{"):-1]


def get_unnormalized_answer(text: str) -> str:
    match = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.", text + "I hope it is correct.")
    return match.group(1).strip() if match else INVALID_ANSWER


SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
REMOVED_EXPRESSIONS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2",
    "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
]


def _remove_units(answer: str) -> str:
    """Unit words between word boundaries, then glued ones outside LaTeX command names."""
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            answer = re.sub(rf"(?<!\\)\b{expr}\b", "", answer)
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            segments = re.split(r"(\\[a-zA-Z]+)", answer)
            segments[::2] = [s.replace(expr, "") for s in segments[::2]]
            answer = "".join(segments)
        else:
            answer = answer.replace(expr, "")
    return answer


def normalize_final_answer(final_answer: str) -> str:
    """utils.normalize_final_answer (Lewkowycz et al. 2022, appendix D, as lm-eval 0.4.13 amends it)."""
    answer = _remove_units(final_answer.split("=")[-1])
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", answer)
    answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer):
        answer = answer.replace(",", "")
    return answer


def is_equiv(x1: str, x2: str) -> bool:
    """utils.is_equiv: identical non-empty strings, else sympy equivalence (killable, 5 s)."""
    if x1 and x1 == x2:
        return True
    return sympy_equiv(x1, x2)


def gold_answer(solution: str) -> str:
    boxed = last_boxed_only_string(solution)
    return normalize_final_answer(remove_boxed(boxed if boxed is not None else ""))


# --- prompts and scoring -----------------------------------------------------------------------


def doc_to_text(doc: dict) -> str:
    return "Problem:" + "\n" + doc["problem"] + "\n\n" + "Solution:"


def doc_to_target(doc: dict) -> str:
    """`{{answer if few_shot is undefined else solution}}`."""
    return doc["solution"] if "few_shot" in doc else doc["answer"]


FORMAT = GenerateFormat(
    prompt=PromptFormat(doc_to_text=doc_to_text, sampler="first_n"), doc_to_target=doc_to_target, stop=STOP, filters=(),
)
METRICS = (MetricSpec("exact_match"), MetricSpec("math_verify"))


def score(instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    """utils.process_results on the stop-truncated first generation."""
    raw = responses[0]
    text = truncate_at_stop(raw if isinstance(raw, str) else str(raw[0]), STOP)  # type: ignore[index]
    answer = normalize_final_answer(get_unnormalized_answer(text))
    exact = is_equiv(answer, instance.doc["answer"])
    verified = math_verify_equiv(instance.doc["solution"], text)
    metrics = {"exact_match": float(exact), "math_verify": float(verified)}
    return Scored(metrics=metrics, response=[raw] if isinstance(raw, str) else list(raw), extracted=answer)  # type: ignore[arg-type]


# --- data --------------------------------------------------------------------------------------


def process_doc(row: dict) -> dict:
    """utils.process_docs: problem, solution and the normalised gold answer."""
    return {"problem": row["problem"], "solution": row["solution"], "answer": gold_answer(row["solution"])}


def dir_loader(config: str, root: Path) -> tuple[list[dict], list[dict]]:
    return files.read_jsonl(root / "math" / config / "test.jsonl", process_doc), exemplar_docs()


def hub_loader(config: str, load) -> tuple[list[dict], list[dict]]:
    return [process_doc(r) for r in load("test")], exemplar_docs()


def load(subject: str) -> Dataset:
    config = SUBJECTS[subject]
    return cached_load(task_name(subject), dir_loader=partial(dir_loader, config),
                       hub=HubSpec(HUB_ID, HUB_REVISION, name=config), hub_loader=partial(hub_loader, config))


# --- registration ------------------------------------------------------------------------------


def make_task(subject: str) -> Task:
    return Task(
        name=task_name(subject), version=VERSION, load=partial(load, subject), build=partial(build_generate, FORMAT),
        score=score, metrics=METRICS, default_fewshot=DEFAULT_FEWSHOT, tags=("math_word_problems", "minerva_math"),
        description=f"MATH {SUBJECTS[subject].replace('_', ' ')}, lm-eval {task_name(subject)} (4-shot Minerva prompt)",
        request_kinds=("generate",),
    )


def _register() -> None:
    for subject in SUBJECTS:
        register_task_factory(task_name(subject), partial(make_task, subject))
    register_group(Group("minerva_math", tuple(task_name(s) for s in SUBJECTS), weight_by_size=True,
                         description="MATH, 7 subjects, 4-shot Minerva prompt"))


_register()
