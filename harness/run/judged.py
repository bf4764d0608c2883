"""The run's judge: `--judge SPEC` and its options, the judge session (settings, prompts, baseline,
asked through the one judge client), and the evaluator's entry points for judged tasks
(open_judge, run_stages, finish_metrics).

A judged task (MT-Bench) declares a `JudgedScoring` stage: scoring needs the candidate again (a
second turn follows the first answer) and then the judge, so the evaluator hands it all pending
instances at once after the other tasks are answered. Candidate requests go through the run's
cache under the model's fingerprint, judge requests under the judge's, so a re-run recomputes
nothing it has; the judge's identity (fingerprint, mode, settings, prompt hashes, baseline file)
is part of the run's configuration hash, so a run with another judge is another run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from harness.backends.base import Backend, ModelSpec, make_backend, parse_model_args, parse_model_spec
from harness.backends.replay import read_model_answers
from harness.core.config import JudgeConfig
from harness.core.errors import UsageError
from harness.core.hashing import sha256_file, sha256_json, sha256_text
from harness.core.redact import strip_userinfo
from harness.core.requests import Generate, Request, Response
from harness.core.task import Instance, Scored, StageContext, Task
from harness.run.prepared import PreparedTask
from harness.run.scheduler import Scheduler
from harness.scoring.judge.client import Failure, JudgeClient
from harness.scoring.judge.fastchat import JudgePrompt, JudgeSettings
from harness.store.db import MetricRow, SampleRow, Store

log = logging.getLogger("harness.judge")
MODES = ("single", "pairwise")
# --judge-args keys the judge itself reads; every other key goes to the judge's backend.
JUDGE_KEYS = {"temperature": float, "max_tokens": int, "seed": int, "retries": int}
COUNT_METRICS = ("invalid_judgments", "position_disagreements")  # reported as totals, not means


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


class JudgeSession:
    """The run's judge: backend, settings, prompts and (pairwise) the baseline's answers."""

    def __init__(self, config: JudgeConfig, backend: Backend, settings: JudgeSettings, prompts: dict[str, JudgePrompt],
                 run_seed: int, baseline: dict[str, list[list[str]]] | None) -> None:
        self.config, self.backend, self.settings, self.prompts = config, backend, settings, prompts
        self.run_seed = run_seed
        self.baseline = baseline
        self.baseline_sha = sha256_file(config.baseline_answers) if config.baseline_answers else None
        self.errors: dict[str, str] = {}
        self.store: Store | None = None
        self.show_progress = False
        self.client = JudgeClient(backend, check=False)  # open_judge has checked the backend
        self._fingerprint = self.client.fingerprint

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
        return {"spec": self.backend.spec.text, "fingerprint": self._fingerprint, "mode": self.config.mode,
                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens, "seed": self.settings.seed,
                "retries": self.settings.retries, "repeats": self.settings.repeats,
                "prompt_hashes": {name: p.sha256 for name, p in sorted(self.prompts.items())},
                "baseline_answers": {"path": str(self.config.baseline_answers), "sha256": self.baseline_sha} if self.baseline_sha else None,
                "backend": self.backend.describe(), "stats": self.client.stats.calls()}

    def ask(self, requests: Sequence[Generate]) -> dict[str, str]:
        """The judge's reply text per request hash; failed requests are missing (their reason in `errors`)."""
        assert self.store is not None, "bind(store) first"
        self.client.store, self.client.show_progress = self.store, self.show_progress
        texts: dict[str, str] = {}
        for key, reply in self.client.complete(requests).items():
            if isinstance(reply, Failure):
                self.errors[key] = reply.detail
            else:
                texts[key] = reply[0]
        return texts

    def close(self) -> None:
        self.backend.close()


# --- evaluator entry points ------------------------------------------------------------------------


def is_staged(task: Task) -> bool:
    return task.judged is not None


def open_judge(config: JudgeConfig | None, prepared: Sequence[PreparedTask], run_seed: int) -> JudgeSession | None:
    """The judge for the judged tasks among `prepared` (None when there are none); every input
    error is a UsageError here, before the database is opened."""
    staged = [p for p in prepared if is_staged(p.task)]
    if not staged:
        if config is not None:
            log.warning("--judge %s is not used: none of the selected tasks is judged", strip_userinfo(config.spec))
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
        assert p.task.judged is not None
        prompts |= p.task.judged.prompts
    base = parse_model_spec(config.spec)
    backend = make_backend(ModelSpec(base.prefix, base.target, backend_args))
    try:
        backend.check({"generate"})  # a server judge: reachable, and serving that model
        if "generate" not in backend.supports:
            raise UsageError(f"judge {backend.spec.text} cannot answer generate requests")
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
        assert p.task.judged is not None
        scored = p.task.judged.run(StageContext(_model_asker(scheduler), judge), pending)
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
