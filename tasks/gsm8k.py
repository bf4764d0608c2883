"""GSM8K (Cobbe et al. 2021), as lm-evaluation-harness 0.4.13's `gsm8k` and `gsm8k_cot`.

`gsm8k` (lm_eval/tasks/gsm8k/gsm8k.yaml, version "3.0"): 5-shot from the train split with
lm-eval's random sampler (seed = run seed, 1234 by default, shared across documents in order),

    Question: <question>
    Answer: <full worked answer ending in "#### <number>">

greedy generation until "Question:", "</s>" or "<|im_end|>", at most 256 new tokens (lm-eval's
HF default max_gen_toks). Two filters, each followed by take_first: `strict-match` (the number
after "#### ") and `flexible-extract` (the last number-like string). Both are scored with
exact_match(ignore_case, regexes_to_ignore ",", "\\$", "(?s).*#### ", "\\.$") against the
whole reference answer; metrics `exact_match,strict-match` and `exact_match,flexible-extract`.

`gsm8k_cot` (gsm8k-cot.yaml, version "3.0"): the 8 fixed chain-of-thought exemplars of Wei et
al. (first_n), "Q: <question>\\nA: <reasoning> The answer is N.", stop at "Q:", "</s>",
"<|im_end|>", strict-match on "The answer is N." and the same flexible-extract; the reference
is the number after "####".

Deliberate difference: generations are cut at the stop sequences before filtering (see
harness.taskkit.formats). `Scored.extracted` is JSON {filter name: extracted answer}.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.task import Dataset, Task
from harness.scoring.filters import ExactMatchOptions, FilterPipeline
from harness.taskkit import files
from harness.taskkit.data import HubSpec
from harness.taskkit.formats import GenerateFormat, PromptFormat, cached_load, generate_until_task
from harness.tasks import register_task

VERSION = "3.0"
COT_VERSION = "3.0"
HUB_ID = "openai/gsm8k"
HUB_REVISION = "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"
HUB_CONFIG = "main"

OPTIONS = ExactMatchOptions(regexes_to_ignore=(",", "\\$", "(?s).*#### ", "\\.$"), ignore_case=True, ignore_punctuation=False)
FLEXIBLE = FilterPipeline("flexible-extract", r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
STRICT = FilterPipeline("strict-match", r"#### (\-?[0-9\.\,]+)")
COT_STRICT = FilterPipeline("strict-match", r"The answer is (\-?[0-9\.\,]+).")

# gsm8k-cot.yaml fewshot_config.samples (Wei et al. 2022), in order.
COT_EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."),
)


def cot_exemplar_docs() -> list[dict]:
    return [{"question": q, "target": t} for q, t in COT_EXEMPLARS]


# --- prompts -----------------------------------------------------------------------------------


def doc_to_text(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def doc_to_target(doc: dict) -> str:
    return doc["answer"]


def cot_doc_to_text(doc: dict) -> str:
    return f"Q: {doc['question']}\nA:"


def cot_doc_to_target(doc: dict) -> str:
    """`answer.split('####')[-1].strip() if answer is defined else target`."""
    return doc["answer"].split("####")[-1].strip() if "answer" in doc else doc["target"]


GSM8K_FORMAT = GenerateFormat(
    prompt=PromptFormat(doc_to_text=doc_to_text, sampler="random"),
    doc_to_target=doc_to_target,
    stop=("Question:", "</s>", "<|im_end|>"),
    filters=(STRICT, FLEXIBLE),
    options=OPTIONS,
)
COT_FORMAT = GenerateFormat(
    prompt=PromptFormat(doc_to_text=cot_doc_to_text, sampler="first_n"),
    doc_to_target=cot_doc_to_target,
    stop=("Q:", "</s>", "<|im_end|>"),
    filters=(COT_STRICT, FLEXIBLE),
    options=OPTIONS,
)


# --- data --------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return files.read_jsonl(path, lambda r: {"question": r["question"], "answer": r["answer"]})


def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl(root / "gsm8k" / "test.jsonl"), read_jsonl(root / "gsm8k" / "train.jsonl")


def cot_dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl(root / "gsm8k" / "test.jsonl"), cot_exemplar_docs()


def _rows(dataset) -> list[dict]:
    return [{"question": r["question"], "answer": r["answer"]} for r in dataset]


def hub_loader(load) -> tuple[list[dict], list[dict]]:
    return _rows(load("test")), _rows(load("train"))


def cot_hub_loader(load) -> tuple[list[dict], list[dict]]:
    return _rows(load("test")), cot_exemplar_docs()


HUB = HubSpec(HUB_ID, HUB_REVISION, name=HUB_CONFIG)


def load() -> Dataset:
    return cached_load("gsm8k", dir_loader=dir_loader, hub=HUB, hub_loader=hub_loader)


def load_cot() -> Dataset:
    return cached_load("gsm8k_cot", dir_loader=cot_dir_loader, hub=HUB, hub_loader=cot_hub_loader)


@register_task("gsm8k")
def gsm8k() -> Task:
    return generate_until_task(
        "gsm8k", VERSION, GSM8K_FORMAT, load, default_fewshot=5,
        tags=("math_word_problems",), description="GSM8K test, lm-eval gsm8k (5-shot, strict-match / flexible-extract)",
    )


@register_task("gsm8k_cot")
def gsm8k_cot() -> Task:
    return generate_until_task(
        "gsm8k_cot", COT_VERSION, COT_FORMAT, load_cot, default_fewshot=8,
        tags=("chain_of_thought",), description="GSM8K test, lm-eval gsm8k_cot (8 fixed chain-of-thought exemplars)",
    )
