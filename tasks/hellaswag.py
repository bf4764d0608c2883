"""HellaSwag (Zellers et al. 2019), as lm-evaluation-harness 0.4.13's `hellaswag`.

Validation split, 0-shot by default, one loglikelihood per ending; metrics `acc` and
`acc_norm`. The prompt is lm-eval's `utils.process_docs`:

    query   = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
    choices = [preprocess(ending) for ending in endings]

where `preprocess` strips, turns " [title]" into ". ", drops every "[...]" tag and collapses
double spaces. `acc_norm` divides each loglikelihood by the number of characters of the
choice string (lm-eval's `len(choice)`, the ending without the leading space delimiter).
Few-shot (only with `--num-fewshot`) draws from the train split with lm-eval's random sampler,
n + 1 at a time minus the evaluated doc (lm-eval's few-shot and test splits are both unset).

Sources: the hub (`Rowan/hellaswag`, fields ctx_a / ctx_b / activity_label / endings / label)
is exact. The shared mirror `hellaswag/hellaswag_val.jsonl` only has `query` ("label: ctx",
made by llama.cpp's text dump: tags removed, ctx_b *not* capitalised) + endings + label.
For it we RECONSTRUCT ctx_b as the trailing fragment after the last sentence end when that
fragment starts lowercase (ActivityNet rows: exact in every row we could check) and as ""
otherwise (WikiHow rows, whose ctx_b is empty on the hub), then apply lm-eval's processing.
This reconstruction is not guaranteed: where a WikiHow ending began with a "[step]"-style tag,
lm-eval keeps a leading space in the choice that the text dump has already removed.
Version "1.0" is lm-eval's.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.task import Dataset, Task
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import ChoiceFormat, PromptFormat, cached_load, multiple_choice_task
from harness.tasks import register_task

VERSION = "1.0"
HUB_ID = "Rowan/hellaswag"
HUB_REVISION = "218ec52e09a7e7462a5400043bb9a69a41d06b76"
VAL_FILE = Path("hellaswag") / "hellaswag_val.jsonl"
TRAIN_FILE = Path("hellaswag") / "hellaswag_train.jsonl"  # optional in a mirror: only few-shot needs it

# The fragment after the last sentence end (., ! or ?, optionally closed by quotes/brackets).
_TRAILING_FRAGMENT = re.compile(r"""[.!?]["')\]]*\s+([^.!?]*)$""")


def preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py:preprocess."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_hub_row(row: dict) -> dict:
    """A hub-schema row -> our doc, exactly as lm-eval's `process_docs`."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "query": preprocess(row["activity_label"] + ": " + ctx),
        "choices": [preprocess(ending) for ending in row["endings"]],
        "gold": files.choice_index(row["label"], len(row["endings"])),
    }


def split_mirror_query(query: str) -> tuple[str, str, str]:
    """Mirror "label: ctx" -> (activity_label, ctx_a, ctx_b), a best-effort reconstruction."""
    label, _, ctx = query.partition(": ")
    match = _TRAILING_FRAGMENT.search(ctx)
    if match and match.group(1)[:1].islower():
        return label, ctx[: match.start(1)].rstrip(), match.group(1)
    return label, ctx, ""


def mirror_to_hub_row(row: dict) -> dict:
    """Mirror schema (query, endings, label) -> hub schema with reconstructed ctx_a / ctx_b."""
    label, ctx_a, ctx_b = split_mirror_query(row["query"])
    ctx = f"{ctx_a} {ctx_b}" if ctx_b else ctx_a
    return {"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": ctx, "endings": list(row["endings"]), "label": str(row["label"])}


def process_row(row: dict) -> dict:
    """Either schema -> our doc {query, choices, gold}."""
    return process_hub_row(row if "ctx_a" in row else mirror_to_hub_row(row))


def read_jsonl(path: Path) -> list[dict]:
    return files.read_jsonl(path, process_row)


def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    docs = read_jsonl(root / VAL_FILE)
    train = root / TRAIN_FILE
    return docs, (read_jsonl(train) if train.is_file() else [])


def hub_loader(load) -> tuple[list[dict], list[dict]]:
    return [process_hub_row(r) for r in load("validation")], [process_hub_row(r) for r in load("train")]


def load() -> Dataset:
    return cached_load("hellaswag", dir_loader=dir_loader, hub=HubSpec(HUB_ID, HUB_REVISION), hub_loader=hub_loader)


CHOICE_FORMAT = ChoiceFormat(
    prompt=PromptFormat(doc_to_text=lambda doc: doc["query"], sampler="random", exclude_eval_doc=True),
    doc_to_choices=lambda doc: doc["choices"],
    doc_to_gold=lambda doc: int(doc["gold"]),
    metrics=("acc", "acc_norm"),
)


@register_task("hellaswag")
def hellaswag() -> Task:
    return multiple_choice_task(
        "hellaswag", VERSION, CHOICE_FORMAT, load, default_fewshot=0,
        tags=("multiple_choice",), description="HellaSwag validation, lm-eval hellaswag (acc, acc_norm)",
    )
