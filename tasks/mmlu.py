"""MMLU (Hendrycks et al.), as lm-evaluation-harness 0.4.13's `mmlu` (lm_eval/tasks/mmlu/default).

One task per subject, `mmlu_<subject>`, scored by loglikelihood of " A" .. " D" after the
prompt below; metric `acc`. Few-shot examples are the first k of the subject's dev split
(lm-eval's `first_n` sampler), after the description
"The following are multiple choice questions (with answers) about <subject>.\\n\\n".

    <question.strip()>
    A. <choice 0>
    B. <choice 1>
    C. <choice 2>
    D. <choice 3>
    Answer:

Groups, each weighted by subject size as lm-eval: `mmlu` (all 57 subjects), `mmlu_stem`,
`mmlu_humanities`, `mmlu_social_sciences`, `mmlu_other`. A subject's category is in its task's
tags (`category:stem`) and from `subject_category()` / `task_category()`.

Deliberate difference: the default is 5-shot (the number MMLU is usually reported at);
lm-eval's default is 0-shot. `--num-fewshot 0` gives lm-eval's default prompt; with the same
number of shots the prompts are byte-identical. Version "1.0" is lm-eval's.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from harness.core.task import Dataset, Group, Task
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import ChoiceFormat, PromptFormat, cached_load, multiple_choice_task
from harness.tasks import register_group, register_task_factory

VERSION = "1.0"
DEFAULT_FEWSHOT = 5
HUB_ID = "cais/mmlu"
HUB_REVISION = "c30699e8356da336a370243923dbaf21066bb9fe"
LETTERS = ["A", "B", "C", "D"]

# lm_eval/tasks/mmlu/_generate_configs.py: subject -> category
SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem", "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities", "human_aging": "other",
    "human_sexuality": "social_sciences", "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other", "marketing": "other",
    "medical_genetics": "other", "miscellaneous": "other", "moral_disputes": "humanities",
    "moral_scenarios": "humanities", "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences", "us_foreign_policy": "social_sciences",
    "virology": "other", "world_religions": "humanities",
}
CATEGORIES: tuple[str, ...] = ("stem", "other", "social_sciences", "humanities")


def task_name(subject: str) -> str:
    return f"mmlu_{subject}"


def subject_category(subject: str) -> str:
    """lm-eval's category of a subject: stem, humanities, social_sciences or other."""
    return SUBJECTS[subject]


def task_category(name: str) -> str | None:
    """The category of an `mmlu_<subject>` task name, None for anything else."""
    subject = name.removeprefix("mmlu_")
    return SUBJECTS.get(subject) if name.startswith("mmlu_") else None


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {' '.join(subject.split('_'))}.\n\n"


def doc_to_text(doc: dict) -> str:
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def choice_format(subject: str) -> ChoiceFormat:
    prompt = PromptFormat(doc_to_text=doc_to_text, description=description(subject), sampler="first_n")
    return ChoiceFormat(prompt=prompt, doc_to_choices=lambda doc: LETTERS, doc_to_gold=lambda doc: int(doc["answer"]))


# --- data --------------------------------------------------------------------------------------


COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


def read_csv(path: Path, subject: str) -> list[dict]:
    """Rows of `question,choice0..3,answer` -> docs in the hub's schema."""
    def row(r: dict[str, str]) -> dict:
        return {"question": r["question"], "subject": subject, "choices": [r[f"choice{i}"] for i in range(4)],
                "answer": files.choice_index(r["answer"], 4)}

    return files.read_csv(path, row, COLUMNS)


def dir_loader(subject: str, root: Path) -> tuple[list[dict], list[dict]]:
    test = read_csv(root / "mmlu" / "test" / f"{subject}_test.csv", subject)
    dev = read_csv(root / "mmlu" / "dev" / f"{subject}_dev.csv", subject)
    return test, dev


def hub_row(row: dict, subject: str) -> dict:
    return {"question": row["question"], "subject": row.get("subject") or subject, "choices": list(row["choices"]), "answer": int(row["answer"])}


def hub_loader(subject: str, load) -> tuple[list[dict], list[dict]]:
    test = [hub_row(r, subject) for r in load("test")]
    dev = [hub_row(r, subject) for r in load("dev")]
    return test, dev


def load(subject: str) -> Dataset:
    return cached_load(
        task_name(subject),
        dir_loader=partial(dir_loader, subject),
        hub=HubSpec(HUB_ID, HUB_REVISION, name=subject),
        hub_loader=partial(hub_loader, subject),
    )


# --- registration ------------------------------------------------------------------------------


def make_task(subject: str) -> Task:
    category = subject_category(subject)
    return multiple_choice_task(
        task_name(subject), VERSION, choice_format(subject), partial(load, subject),
        default_fewshot=DEFAULT_FEWSHOT,
        tags=("mmlu", f"category:{category}", f"mmlu_{category}"),
        description=f"MMLU {subject.replace('_', ' ')} ({category.replace('_', ' ')}), lm-eval mmlu_{subject}",
    )


def _register() -> None:
    for subject in SUBJECTS:
        register_task_factory(task_name(subject), partial(make_task, subject))
    for category in CATEGORIES:
        members = tuple(task_name(s) for s, c in SUBJECTS.items() if c == category)
        register_group(Group(f"mmlu_{category}", members, weight_by_size=True, description=f"MMLU {category.replace('_', ' ')}"))
    register_group(Group("mmlu", tuple(task_name(s) for s in SUBJECTS), weight_by_size=True, description="MMLU, all 57 subjects"))


_register()
