"""Reusable task builders that reproduce lm-evaluation-harness 0.4.13's `ConfigurableTask`.

A prompt is built exactly as `ConfigurableTask.fewshot_context` renders it without a chat
template:

    description + for each shot: doc_to_text(shot) + target_delimiter + answer(shot) + fewshot_delimiter
                + doc_to_text(doc)

(a shot whose answer is the empty string is rendered as its text alone, as lm-eval's
`build_qa_turn` does). Multiple choice sends one `Loglikelihood(context, target_delimiter +
choice)` per choice and scores `acc` / `acc_norm` as `ConfigurableTask.process_results`;
generate-until sends one `Generate` and scores each named filter pipeline with exact match,
reporting `"<metric>,<filter>"` as lm-eval does.

Few-shot documents are drawn in document order from document 0 with one sampler per `build`
call, so with `limit` each document gets exactly what lm-eval gives it with `--limit`; the run
seed is the few-shot seed (see `harness.taskkit.fewshot`).

Deliberate differences from lm-eval:
- generations are cut at the task's stop sequences before filtering (lm-eval's model classes
  do this before its filters run; doing it here too makes every backend score alike);
- `Scored.extracted` is the predicted choice (multiple choice) or a JSON object
  `{filter name: extracted answer}` (generation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from harness.core.errors import UsageError
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, Response
from harness.core.task import Dataset, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring.filters import ExactMatchOptions, FilterPipeline, exact_match, truncate_at_stop
from harness.taskkit import data
from harness.taskkit.fewshot import SamplerKind, make_sampler

__all__ = [
    "PromptFormat", "ChoiceFormat", "GenerateFormat", "fewshot_context", "build_contexts",
    "build_multiple_choice", "score_multiple_choice", "build_generate", "score_generate",
    "multiple_choice_task", "generate_until_task", "cached_load", "clear_dataset_cache",
]


@dataclass(frozen=True)
class PromptFormat:
    """lm-eval's description / doc_to_text / delimiters and few-shot sampler of one task.

    `exclude_eval_doc` is lm-eval's `fewshot_split == test_split` test: draw n + 1 and drop the
    document itself (true for hellaswag, whose few-shot and test splits are both unset).
    """

    doc_to_text: Callable[[dict], str]
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    sampler: SamplerKind = "random"
    exclude_eval_doc: bool = False


@dataclass(frozen=True)
class ChoiceFormat:
    """A multiple-choice task: choices and gold index per document, metrics among acc / acc_norm."""

    prompt: PromptFormat
    doc_to_choices: Callable[[dict], list[str]]
    doc_to_gold: Callable[[dict], int]
    metrics: tuple[str, ...] = ("acc",)

    def answer(self, doc: dict) -> str:
        return self.doc_to_choices(doc)[self.doc_to_gold(doc)]


@dataclass(frozen=True)
class GenerateFormat:
    """A generate-until task: target text, stop sequences, filter pipelines and exact-match options."""

    prompt: PromptFormat
    doc_to_target: Callable[[dict], str]
    stop: tuple[str, ...]
    filters: tuple[FilterPipeline, ...]
    options: ExactMatchOptions = ExactMatchOptions()
    max_tokens: int = 256  # lm-eval's HFLM default max_gen_toks
    temperature: float = 0.0
    metric: str = "exact_match"

    def metric_names(self) -> tuple[str, ...]:
        return tuple(f"{self.metric},{f.name}" for f in self.filters)


# --- prompts -----------------------------------------------------------------------------------


def fewshot_context(prompt: PromptFormat, shots: Sequence[tuple[str, str]], query: str) -> str:
    """description + rendered (text, answer) shots + the query text, as lm-eval joins them."""
    parts = [prompt.description]
    for text, answer in shots:
        if answer == "":
            parts.append(text)
        else:
            parts.append(text + prompt.target_delimiter + answer + prompt.fewshot_delimiter)
    parts.append(query)
    return "".join(parts)


def build_contexts(
    prompt: PromptFormat, answer_of: Callable[[dict], str], dataset: Dataset, limit: int | None, num_fewshot: int, seed: int
) -> list[tuple[int, dict, str]]:
    """(doc_id, doc, context) for docs[:limit], sampling shots sequentially from doc 0."""
    if num_fewshot < 0:
        raise UsageError("num_fewshot must be >= 0")
    docs = dataset.docs if limit is None else dataset.docs[:limit]
    sampler = make_sampler(prompt.sampler, dataset.fewshot_docs, seed)
    out: list[tuple[int, dict, str]] = []
    for doc_id, doc in enumerate(docs):
        shots = sampler.sample(num_fewshot, doc if prompt.exclude_eval_doc else None) if num_fewshot > 0 else []
        rendered = [(prompt.doc_to_text(s), answer_of(s)) for s in shots]
        out.append((doc_id, doc, fewshot_context(prompt, rendered, prompt.doc_to_text(doc))))
    return out


# --- multiple choice ---------------------------------------------------------------------------


def build_multiple_choice(fmt: ChoiceFormat, dataset: Dataset, limit: int | None, num_fewshot: int, seed: int) -> list[Instance]:
    instances = []
    for doc_id, doc, context in build_contexts(fmt.prompt, fmt.answer, dataset, limit, num_fewshot, seed):
        choices = fmt.doc_to_choices(doc)
        requests = tuple(Loglikelihood(context, fmt.prompt.target_delimiter + c) for c in choices)
        instances.append(Instance(doc_id=doc_id, doc=doc, prompt=context, target=fmt.answer(doc), requests=requests))
    return instances


def _argmax(values: Sequence[float]) -> int:
    """numpy.argmax: the first maximum, and the first NaN if there is one."""
    for i, v in enumerate(values):
        if math.isnan(v):
            return i
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _divide(x: float, y: float) -> float:
    """numpy float division (x / 0 is +-inf or nan instead of an exception)."""
    if y:
        return x / y
    return math.nan if x == 0 or math.isnan(x) else math.copysign(math.inf, x)


def score_multiple_choice(fmt: ChoiceFormat, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    """acc and acc_norm as lm-eval: acc_norm divides each loglikelihood by len(choice) in characters."""
    results = [r if isinstance(r, LoglikelihoodResult) else LoglikelihoodResult(float(r[0]), bool(r[1])) for r in responses]  # type: ignore[index]
    lls = [r.logprob for r in results]
    choices = fmt.doc_to_choices(instance.doc)
    if len(lls) != len(choices):
        raise ValueError(f"expected {len(choices)} loglikelihoods, got {len(lls)}")
    gold = fmt.doc_to_gold(instance.doc)
    gold = gold if 0 <= gold < len(choices) else -100
    pred = _argmax(lls)
    pred_norm = _argmax([_divide(ll, float(len(c))) for ll, c in zip(lls, choices)])
    values = {"acc": 1.0 if pred == gold else 0.0, "acc_norm": 1.0 if pred_norm == gold else 0.0}
    return Scored(
        metrics={m: values[m] for m in fmt.metrics},
        response=[[r.logprob, r.is_greedy] for r in results],
        extracted=choices[pred],
        loglikelihoods=lls,
    )


# --- generate until ----------------------------------------------------------------------------


def build_generate(fmt: GenerateFormat, dataset: Dataset, limit: int | None, num_fewshot: int, seed: int) -> list[Instance]:
    instances = []
    for doc_id, doc, context in build_contexts(fmt.prompt, fmt.doc_to_target, dataset, limit, num_fewshot, seed):
        request = Generate(prompt=context, stop=fmt.stop, max_tokens=fmt.max_tokens, temperature=fmt.temperature)
        instances.append(Instance(doc_id=doc_id, doc=doc, prompt=context, target=fmt.doc_to_target(doc), requests=(request,)))
    return instances


def score_generate(fmt: GenerateFormat, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    """Each filter pipeline over the (stop-truncated) generations, then exact match with the target."""
    raw = responses[0]
    texts = [raw] if isinstance(raw, str) else [t if isinstance(t, str) else "" for t in raw]  # type: ignore[union-attr]
    texts = [truncate_at_stop(t, fmt.stop) for t in texts]
    target = fmt.doc_to_target(instance.doc)
    metrics: dict[str, float] = {}
    extracted: dict[str, str] = {}
    for pipeline in fmt.filters:
        answer = pipeline.apply(texts)
        extracted[pipeline.name] = answer
        metrics[f"{fmt.metric},{pipeline.name}"] = exact_match(answer, target, fmt.options)
    response = [raw] if isinstance(raw, str) else list(raw)  # type: ignore[arg-type]
    return Scored(metrics=metrics, response=response, extracted=json.dumps(extracted, ensure_ascii=False))


# --- Task values -------------------------------------------------------------------------------


def multiple_choice_task(
    name: str, version: str, fmt: ChoiceFormat, load: Callable[[], Dataset], *,
    default_fewshot: int = 0, tags: tuple[str, ...] = (), description: str = "",
) -> Task:
    return Task(
        name=name, version=version, load=load,
        build=partial(build_multiple_choice, fmt), score=partial(score_multiple_choice, fmt),
        metrics=tuple(MetricSpec(m) for m in fmt.metrics),
        default_fewshot=default_fewshot, tags=tags, description=description, request_kinds=("loglikelihood",),
    )


def generate_until_task(
    name: str, version: str, fmt: GenerateFormat, load: Callable[[], Dataset], *,
    default_fewshot: int = 0, tags: tuple[str, ...] = (), description: str = "",
) -> Task:
    return Task(
        name=name, version=version, load=load,
        build=partial(build_generate, fmt), score=partial(score_generate, fmt),
        metrics=tuple(MetricSpec(m) for m in fmt.metric_names()),
        default_fewshot=default_fewshot, tags=tags, description=description, request_kinds=("generate",),
    )


# The dataset cache lives with the source resolution it depends on.
cached_load = data.load
clear_dataset_cache = data.clear_cache
