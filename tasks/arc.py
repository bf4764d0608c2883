"""ARC (Clark et al. 2018), as lm-evaluation-harness 0.4.13's lm_eval/tasks/arc/arc_easy.yaml and
arc_challenge.yaml: test split, 0-shot, "Question: {{question}}\nAnswer:", one loglikelihood per
`choices.text`, gold `choices.label.index(answerKey)`, acc and acc_norm, tag `ai2_arc`; shots from
the train split (lm-eval's random sampler, the evaluated doc not excluded). Version "1.0".

Sources: hub `allenai/ai2_arc` {id, question, choices: {text, label}, answerKey}; the mirror's AI2
jsonl mapped as the hub's builder does, labels and answerKey as written ("A".."E" or "1".."4").
The mirror has no train file (`ARC-*-Train.jsonl` is read if present): with it and with the
fixture, `--num-fewshot` > 0 is the sampler's one-line error.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from harness.core.task import Dataset, Task
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import ChoiceFormat, PromptFormat, cached_load, multiple_choice_task
from harness.tasks import register_tag, register_task_factory

VERSION = "1.0"
HUB_ID = "allenai/ai2_arc"
HUB_REVISION = "210d026faf9955653af8916fad021475a3f00453"
CONFIGS = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge"}


def gold(doc: dict) -> int:
    return doc["choices"]["label"].index(doc["answerKey"])


def mirror_to_hub_row(row: dict) -> dict:
    """AI2's jsonl row -> the hub's row (the allenai/ai2_arc builder's mapping)."""
    choices = row["question"]["choices"]
    return {"id": row["id"], "question": row["question"]["stem"], "answerKey": row["answerKey"],
            "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]}}


def checked(doc: dict) -> dict:
    gold(doc)  # an answerKey that is no label: one error line naming the row, on load
    return doc


def dir_loader(config: str, root: Path) -> tuple[list[dict], list[dict]]:
    def read(path: Path) -> list[dict]:
        return files.read_jsonl(path, lambda row: checked(mirror_to_hub_row(row)))

    train = root / "arc" / f"{config}-Train.jsonl"
    return read(root / "arc" / f"{config}-Test.jsonl"), (read(train) if train.is_file() else [])


def hub_loader(load) -> tuple[list[dict], list[dict]]:
    return [checked(dict(r)) for r in load("test")], [checked(dict(r)) for r in load("train")]


def load(name: str) -> Dataset:
    config = CONFIGS[name]
    return cached_load(name, dir_loader=partial(dir_loader, config), hub=HubSpec(HUB_ID, HUB_REVISION, config), hub_loader=hub_loader)


CHOICE_FORMAT = ChoiceFormat(
    prompt=PromptFormat(doc_to_text=lambda doc: f"Question: {doc['question']}\nAnswer:", sampler="random"),
    doc_to_choices=lambda doc: list(doc["choices"]["text"]), doc_to_gold=gold, metrics=("acc", "acc_norm"),
)


def make_task(name: str) -> Task:
    return multiple_choice_task(name, VERSION, CHOICE_FORMAT, partial(load, name), tags=("ai2_arc", "multiple_choice"),
                                description=f"ARC {CONFIGS[name][4:]} test, lm-eval {name} (acc, acc_norm)")


for _name in CONFIGS:
    register_task_factory(_name, partial(make_task, _name))
register_tag("ai2_arc", tuple(CONFIGS))
