"""What a task is: a value that loads documents, turns them into requests and scores responses.

A task never talks to a model. The evaluator asks it for `Instance`s (one per document, with
the prompt shown to the model and the requests to answer), hands the requests to a backend
through the scheduler, and gives the responses back to `score`, with a `ScoreContext` that
carries what the run lends to scoring (the sandbox that code tasks execute in).

A judged task (MT-Bench) has no per-document `score`: it declares a `JudgedScoring` stage,
which the run calls with all pending instances once the other tasks are answered, because
scoring needs the model again (a second turn follows the first answer) and then a judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.requests import Request, Response

# "mean": of per-document values; the others are lm-eval's corpus aggregations over per-document
# items (harness.scoring.corpus, ported from lm_eval/api/metrics.py).
Aggregation = Literal["mean", "perplexity", "weighted_perplexity", "bits_per_byte", "f1", "matthews_corrcoef",
                      "brier_score", "bleu", "chrf", "chrf++", "ter"]


@dataclass(frozen=True)
class Dataset:
    """Documents of one task, and where they came from."""

    docs: list[dict]
    fewshot_docs: list[dict]
    source: str  # "mirror:PATH", "hub:ID@REVISION" or "fixture:PATH"
    fingerprint: str  # sha256 over the canonical JSON of docs and few-shot docs


@dataclass(frozen=True)
class Instance:
    """One evaluation document, ready for a backend."""

    doc_id: int
    doc: dict
    prompt: str  # the full text the model sees (context of a multiple-choice question)
    target: str  # the gold answer as text
    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Scored:
    """The outcome of one document."""

    metrics: dict[str, float]
    response: object  # raw responses, JSON-serialisable
    extracted: str | None = None  # the answer the task read from the response
    loglikelihoods: list[float] | None = None  # one per choice, for multiple choice


@dataclass(frozen=True)
class ScoreContext:
    """What a run lends to scoring. `sandbox` is the run's code sandbox (harness.sandbox.Sandbox),
    opened by the run for tasks tagged `executes_code`, None otherwise."""

    sandbox: Any = None


ScoreFn = Callable[[Instance, list[Response], ScoreContext], Scored]


@dataclass(frozen=True)
class StageContext:
    """What a judged stage gets from the run: the model (through the run's cache) and the judge."""

    ask_model: Callable[[Sequence[Request]], dict[str, Response]]
    judge: Any  # harness.run.judged.JudgeSession: settings, prompts, baseline, and ask()


@dataclass(frozen=True)
class JudgedScoring:
    """The scoring stage of a judged task: `run(context, instances) -> one Scored per instance`;
    `prompts` are the judge prompts it uses (their hashes are part of the run's identity)."""

    run: Callable[[StageContext, list[Instance]], list[Scored]]
    prompts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool = True
    aggregation: Aggregation = "mean"


@dataclass(frozen=True)
class Task:
    name: str
    version: str
    load: Callable[[], Dataset]
    # (dataset, number of documents to evaluate, num_fewshot, seed) -> instances, in document order
    build: Callable[[Dataset, int | None, int, int], list[Instance]]
    score: ScoreFn | None  # per document; None for a judged task, which declares `judged` instead
    metrics: tuple[MetricSpec, ...]
    default_fewshot: int = 0
    tags: tuple[str, ...] = ()
    description: str = ""
    # names of request kinds the task sends, so a backend can refuse before a run starts
    request_kinds: tuple[str, ...] = field(default=("loglikelihood",))
    judged: JudgedScoring | None = None

    def __post_init__(self) -> None:
        if (self.score is None) == (self.judged is None):
            raise ValueError(f"task {self.name}: give exactly one of score (per document) or judged (a judged stage)")


@dataclass(frozen=True)
class Group:
    """A named set of tasks whose metrics are also aggregated together.

    `weight_by_size` follows lm-evaluation-harness 0.4 (MMLU weights subjects by their size).
    """

    name: str
    tasks: tuple[str, ...]
    weight_by_size: bool = True
    description: str = ""
