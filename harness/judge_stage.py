"""The run's judge: `--judge SPEC` and its options, the guarded judge backend, and the evaluator's
entry points for judged tasks (open_judge, run_stages, finish_metrics).

A judged task (MT-Bench) has a `StagedScore` as its score: scoring needs the candidate again (a
second turn follows the first answer) and then the judge, so the evaluator hands it all pending
instances at once after the other tasks are answered. Candidate requests go through the run's
cache under the model's fingerprint, judge requests under the judge's, so a re-run recomputes
nothing it has; the judge's identity (fingerprint, mode, settings, prompt hashes, baseline file)
is part of the run's configuration hash, so a run with another judge is another run.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from harness.backends.base import Backend, ModelSpec, Progress, make_backend, parse_model_args, parse_model_spec
from harness.backends.replay import read_model_answers
from harness.errors import UsageError
from harness.hashing import sha256_file, sha256_json, sha256_text
from harness.judge import JudgePrompt, JudgeSettings
from harness.requests import Generate, Request, Response, request_hash
from harness.scheduler import Scheduler
from harness.store import MetricRow, SampleRow, Store
from harness.task import Instance, Scored

if TYPE_CHECKING:
    from harness.evaluator import PreparedTask

log = logging.getLogger("harness.judge")
MODES = ("single", "pairwise")
# --judge-args keys the judge itself reads; every other key goes to the judge's backend.
JUDGE_KEYS = {"temperature": float, "max_tokens": int, "seed": int, "retries": int}
COUNT_METRICS = ("invalid_judgments", "position_disagreements")  # reported as totals, not means
GIVE_UP_AFTER = 8  # consecutive failed judge calls before the rest of a batch is marked failed unasked
SECRET_KEY = re.compile(r"key|token|secret|password", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeConfig:
    """What `harness run --judge ...` asked for."""

    spec: str
    args: str | None = None
    repeats: int = 1
    mode: str = "single"
    baseline_answers: Path | None = None


def split_judge_args(text: str | None) -> tuple[dict, dict[str, str]]:
    """--judge-args -> (judge settings, backend args)."""
    settings: dict = {}
    backend_args: dict[str, str] = {}
    for key, value in parse_model_args(text).items():
        if key not in JUDGE_KEYS:
            backend_args[key] = value
            continue
        try:
            settings[key] = JUDGE_KEYS[key](value)
        except ValueError:
            raise UsageError(f"--judge-args {key}={value!r}: expected a number") from None
    return settings, backend_args


# --- the guarded judge backend -------------------------------------------------------------------


class GuardedJudge(Backend):
    """The judge backend with failures kept out of the run: answers are yielded (and cached by the
    scheduler); a request that fails is recorded in `errors`, not cached, and asked again by a re-run.

    A failing batch is split in halves until the failing requests stand alone, so one stalled
    request costs a few timeouts, not the rest of the batch. After GIVE_UP_AFTER failures in a
    row the rest is marked failed without asking: a judge that died mid-run ends the run quickly."""

    supports = frozenset({"generate"})

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.spec)
        self.inner = inner
        self.name = f"judge {inner.name}"
        self.errors: dict[str, str] = {}
        self.failures_in_row = 0
        self.last_error = ""

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        yield from self._batch(requests, list(range(len(requests))), progress)

    def _batch(self, requests: Sequence[Generate], indices: list[int], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        if self.failures_in_row >= GIVE_UP_AFTER:
            for i in indices:
                self.errors[request_hash(requests[i])] = f"not asked: {self.failures_in_row} judge calls failed in a row ({self.last_error})"
                progress(1)
            return
        done: set[int] = set()
        try:
            for j, result in self.inner.generate([requests[i] for i in indices], progress):
                done.add(j)
                self.failures_in_row = 0
                yield indices[j], result
            return
        except Exception as exc:  # noqa: BLE001 - any judge failure is an invalid judgment, never a crash
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        rest = [i for j, i in enumerate(indices) if j not in done]
        if len(indices) == 1:
            self.failures_in_row += 1
            self.errors[request_hash(requests[indices[0]])] = self.last_error
            log.warning("judge call failed: %s", self.last_error)
            progress(1)
            return
        half = max(1, len(rest) // 2)
        for part in (rest[:half], rest[half:]):
            if part:
                yield from self._batch(requests, part, progress)


@dataclass
class JudgeStats:
    requested: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0


class JudgeSession:
    """The run's judge: backend, settings, prompts and (pairwise) the baseline's answers."""

    def __init__(self, config: JudgeConfig, backend: Backend, settings: JudgeSettings, prompts: dict[str, JudgePrompt],
                 run_seed: int, baseline: dict[str, list[list[str]]] | None) -> None:
        self.config, self.backend, self.settings, self.prompts = config, backend, settings, prompts
        self.run_seed = run_seed
        self.baseline = baseline
        self.baseline_sha = sha256_file(config.baseline_answers) if config.baseline_answers else None
        self.errors: dict[str, str] = {}
        self.stats = JudgeStats()
        self.store: Store | None = None
        self.show_progress = False
        self._fingerprint = backend.fingerprint()

    @property
    def pairwise(self) -> bool:
        return self.config.mode == "pairwise"

    def repeat_seed(self, repeat: int) -> int | None:
        """One judgment asked once keeps FastChat's request (no seed unless given); repeats differ by seed."""
        if self.settings.repeats == 1:
            return self.settings.seed
        return (self.run_seed if self.settings.seed is None else self.settings.seed) + repeat

    def baseline_turns(self, question_id: object) -> list[str]:
        assert self.baseline is not None
        return self.baseline[str(question_id)][0]

    def identity(self) -> dict:
        return {"fingerprint": self._fingerprint, "mode": self.config.mode, "settings": vars(self.settings),
                "prompts": {name: p.sha256 for name, p in sorted(self.prompts.items())}, "baseline": self.baseline_sha}

    def describe(self) -> dict:
        args = {k: ("***" if SECRET_KEY.search(k) else v) for k, v in self.backend.spec.args.items()}
        return {"spec": self.backend.spec.text, "fingerprint": self._fingerprint, "mode": self.config.mode,
                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens, "seed": self.settings.seed,
                "retries": self.settings.retries, "repeats": self.settings.repeats,
                "prompt_hashes": {name: p.sha256 for name, p in sorted(self.prompts.items())},
                "baseline_answers": {"path": str(self.config.baseline_answers), "sha256": self.baseline_sha} if self.baseline_sha else None,
                "backend": self.backend.describe() | {"args": args}, "stats": vars(self.stats)}

    def ask(self, requests: Sequence[Generate]) -> dict[str, str]:
        """The judge's reply text per request hash; failed requests are missing (their reason in `errors`)."""
        assert self.store is not None, "bind(store) first"
        guarded = GuardedJudge(self.backend)
        scheduler = Scheduler(self.store, guarded, self._fingerprint, show_progress=self.show_progress)
        answers = scheduler.answer(requests)
        self.errors.update(guarded.errors)
        s = scheduler.stats
        self.stats.requested += s.requested
        self.stats.cached += s.cached
        self.stats.computed += s.computed
        self.stats.failed += len(guarded.errors)
        texts: dict[str, str] = {}
        for key, value in answers.items():
            if isinstance(value, list) and value and isinstance(value[0], str):
                texts[key] = value[0]
            else:
                self.errors[key] = f"malformed judge response: {str(value)[:100]}"
        return texts

    def close(self) -> None:
        self.backend.close()


# --- evaluator entry points ------------------------------------------------------------------------


@dataclass
class StageContext:
    ask_model: Callable[[Sequence[Request]], dict[str, Response]]  # the candidate, through the run's cache
    judge: JudgeSession


@dataclass
class StagedScore:
    """The `score` of a judged task: `run(context, instances) -> one Scored per instance`."""

    run: Callable[[StageContext, list[Instance]], list[Scored]]
    prompts: dict[str, JudgePrompt] = field(default_factory=dict)

    def __call__(self, instance: Instance, responses: list) -> Scored:
        raise UsageError("a judged task is scored with its judge: run it through `harness run --judge SPEC`")


def is_staged(task: object) -> bool:
    return isinstance(getattr(task, "score", None), StagedScore)


def open_judge(config: JudgeConfig | None, prepared: Sequence[PreparedTask], run_seed: int) -> JudgeSession | None:
    """The judge for the judged tasks among `prepared` (None when there are none); every input
    error is a UsageError here, before the database is opened."""
    staged = [p for p in prepared if is_staged(p.task)]
    if not staged:
        if config is not None:
            log.warning("--judge %s is not used: none of the selected tasks is judged", config.spec)
        return None
    names = ", ".join(p.task.name for p in staged)
    if config is None:
        raise UsageError(f"{names} needs a judge: --judge SPEC, e.g. --judge openai:gpt-4o@https://api.openai.com/v1")
    if config.mode not in MODES:
        raise UsageError(f"--judge-mode {config.mode!r}: expected single or pairwise")
    values, backend_args = split_judge_args(config.args)
    settings = JudgeSettings(**values, repeats=config.repeats)
    if settings.repeats < 1 or settings.retries < 0 or settings.max_tokens < 1 or settings.temperature < 0:
        raise UsageError("judge: repeats >= 1, retries >= 0, max_tokens >= 1 and temperature >= 0 are required")
    if settings.repeats > 1 and settings.temperature == 0 and settings.seed is None:
        raise UsageError(f"--judge-repeats {settings.repeats} needs a sampling judge or a seed: "
                         "--judge-args temperature=0.7 (or seed=S)")
    baseline = _baseline(config, staged)
    prompts: dict[str, JudgePrompt] = {}
    for p in staged:
        prompts |= p.task.score.prompts  # type: ignore[union-attr]
    base = parse_model_spec(config.spec)
    backend = make_backend(ModelSpec(base.prefix, base.target, backend_args))
    try:
        backend.check({"generate"})  # a server judge: reachable, and serving that model
        if "generate" not in backend.supports:
            raise UsageError(f"judge {config.spec} cannot answer generate requests")
        return JudgeSession(config, backend, settings, prompts, run_seed, baseline)
    except BaseException:
        backend.close()
        raise


def _baseline(config: JudgeConfig, staged: Sequence[PreparedTask]) -> dict[str, list[list[str]]] | None:
    if config.mode != "pairwise":
        if config.baseline_answers is not None:
            raise UsageError("--baseline-answers is for --judge-mode pairwise")
        return None
    if config.baseline_answers is None:
        raise UsageError("--judge-mode pairwise needs --baseline-answers FILE (FastChat model_answer format)")
    answers = read_model_answers(config.baseline_answers)
    wanted = {str(i.doc["question_id"]) for p in staged for i in p.instances if "question_id" in i.doc}
    missing = sorted(wanted - set(answers), key=lambda q: (len(q), q))
    if missing:
        raise UsageError(f"--baseline-answers {config.baseline_answers} has no answer to question(s) {', '.join(missing[:10])}")
    return answers


def _model_asker(scheduler: Scheduler) -> Callable[[Sequence[Request]], dict[str, Response]]:
    """Candidate requests through a fresh scheduler on the run's backend and cache; stats add up."""

    def ask(requests: Sequence[Request]) -> dict[str, Response]:
        sub = Scheduler(scheduler.store, scheduler.backend, scheduler.fingerprint, show_progress=scheduler.show_progress)
        answers = sub.answer(requests)
        for key, value in vars(sub.stats).items():
            setattr(scheduler.stats, key, getattr(scheduler.stats, key) + value)
        return answers

    return ask


def run_stages(store: Store, run_id: str, prepared: Sequence[PreparedTask], scheduler: Scheduler,
               judge: JudgeSession | None) -> None:
    """Answer, judge and store every pending instance of the judged tasks."""
    for p in prepared:
        if not is_staged(p.task):
            continue
        assert judge is not None, "open_judge refuses judged tasks without a judge"
        done = store.done_docs(run_id, p.task.name)
        pending = [i for i in p.instances if i.doc_id not in done]
        if not pending:
            continue
        judge.store, judge.show_progress = store, scheduler.show_progress
        scored = p.task.score.run(StageContext(_model_asker(scheduler), judge), pending)  # type: ignore[union-attr]
        store.insert_samples(run_id, [_sample_row(p.task.name, inst, s) for inst, s in zip(pending, scored)])


def _sample_row(task: str, inst: Instance, scored: Scored) -> SampleRow:
    return SampleRow(task=task, doc_id=inst.doc_id, doc_hash=sha256_json(inst.doc), prompt_hash=sha256_text(inst.prompt),
                     target_hash=sha256_text(inst.target), prompt=inst.prompt, target=inst.target, response=scored.response,
                     extracted=scored.extracted, metrics=scored.metrics, loglikelihoods=None)


def finish_metrics(store: Store, run_id: str, prepared: Sequence[PreparedTask], rows: list[MetricRow],
                   judge: JudgeSession | None) -> list[MetricRow]:
    """For judged tasks: drop metrics no document has (categories outside --limit, the other mode's),
    and report invalid judgments and position disagreements as totals over all judgments."""
    staged = [p for p in prepared if is_staged(p.task)]
    if not staged or judge is None:
        return rows
    names = {p.task.name for p in staged}
    out = [r for r in rows if r.task not in names or (r.n > 0 and r.metric not in COUNT_METRICS)]
    per_call = judge.settings.repeats * (2 if judge.pairwise else 1)
    for name in sorted(names):
        per_doc = [json.loads(m) for m in store.sample_metrics(run_id, name)["metrics"]]
        judgments = per_call * len(per_doc)
        invalid = int(sum(d.get("invalid_judgments", 0) for d in per_doc))
        out.append(MetricRow(name, "invalid_judgments", float(invalid), None, None, None, judgments))
        if judge.pairwise:
            matches = judge.settings.repeats * len(per_doc)
            out.append(MetricRow(name, "position_disagreements", float(sum(d.get("position_disagreements", 0) for d in per_doc)),
                                 None, None, None, matches))
        if invalid:
            log.warning("%s: %d of %d judgments are invalid (unparseable after %d retries, or the judge failed); "
                        "they are excluded from the scores", name, invalid, judgments, judge.settings.retries)
    return out
