"""LLM-as-a-judge as FastChat's llm_judge grades MT-Bench: prompts, rating parsing, single grading.

Judged tasks are two-stage: the candidate answers, then a judge backend grades. The
judge is any backend spec (`--judge openai:gpt-4o@https://...`, `--judge hf:...`); its calls are
plain `Generate(messages=(system, user))` requests that go through the run's request cache under
the judge's fingerprint, so a re-run judges nothing it has already judged.

As FastChat (fastchat/llm_judge/common.py: run_judge_single, run_judge_pair, chat_completion_openai):
- the prompts are judge_prompts.jsonl, filled with `str.format` exactly as run_judge_single and
  run_judge_pair fill them, and sent as one system message (the prompt's system_prompt) and one
  user message, at temperature 0 with max_tokens 2048;
- a rating is the first match of `\\[\\[(\\d+\\.?\\d*)\\]\\]`, else of `\\[(\\d+\\.?\\d*)\\]`, read with
  ast.literal_eval; -1 when neither matches (no range check: FastChat keeps a "[[15]]" as 15).

Where this goes beyond FastChat (none of it changes a score when the judge behaves):
- an unparseable judgment is asked again up to `retries` times, each retry a distinct request
  (seed = 1000 * attempt) so that the cache does not hand the same text back; FastChat keeps -1;
- a judge call that fails (timeout, HTTP error, a backend exception) never stops the run: it is
  recorded as invalid, it is not cached, and a re-run asks again (harness.scoring.judge.client);
- invalid judgments (-1 after the retries, or failed) are excluded from the scores and counted;
- `repeats` > 1 asks every judgment several times (seeds base + r) and reports the judge's
  within-item variance (`judge_variance`, the mean over items of the sample variance).
"""

from __future__ import annotations

import ast
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.requests import Generate, Message, request_hash

# fastchat/llm_judge/common.py
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
INVALID_RATING = -1.0
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048  # chat_completion_openai(..., temperature=0, max_tokens=2048)
RETRY_SEED_STEP = 1000
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class JudgePrompt:
    """One line of FastChat's judge_prompts.jsonl, field for field."""

    name: str
    type: str  # single | pairwise
    system_prompt: str
    prompt_template: str
    description: str
    category: str
    output_format: str  # [[rating]] | [[A]]

    @property
    def sha256(self) -> str:
        return sha256_json(asdict(self))


def load_judge_prompts(path: Path) -> dict[str, JudgePrompt]:
    prompts: dict[str, JudgePrompt] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompt = JudgePrompt(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}:{lineno}: not a FastChat judge prompt ({exc})") from None
        prompts[prompt.name] = prompt
    return prompts


def prompt_name(pairwise: bool, ref_based: bool, multi_turn: bool) -> str:
    """FastChat's make_judge_single / make_judge_pairwise: which prompt grades which turn."""
    if pairwise:
        base = "pair-math-v1" if ref_based else "pair-v2"
    else:
        base = "single-math-v1" if ref_based else "single-v1"
    return base + ("-multi-turn" if multi_turn else "")


@dataclass(frozen=True)
class JudgeItem:
    """What one judgment sees: the user turns up to the judged one, and the answers to them."""

    key: int  # the task's document id
    questions: tuple[str, ...]  # 1 (first turn) or 2 (second turn, judged with the whole conversation)
    answers: tuple[str, ...]  # the candidate's answers, one per question
    references: tuple[str, ...] | None = None  # reference answers (FastChat: math, reasoning, coding)
    baseline: tuple[str, ...] | None = None  # the other model's answers (pairwise)

    @property
    def multi_turn(self) -> bool:
        return len(self.questions) == 2


def reference_kwargs(item: JudgeItem) -> dict[str, str]:
    if item.references is None:
        return {}
    kwargs = {"ref_answer_1": item.references[0]}
    if item.multi_turn:
        kwargs["ref_answer_2"] = item.references[1]
    return kwargs


def render_single(prompt: JudgePrompt, item: JudgeItem) -> str:
    """The user message of run_judge_single (str.format leaves braces inside the answers alone)."""
    if item.multi_turn:
        return prompt.prompt_template.format(question_1=item.questions[0], question_2=item.questions[1],
                                             answer_1=item.answers[0], answer_2=item.answers[1], **reference_kwargs(item))
    return prompt.prompt_template.format(question=item.questions[0], answer=item.answers[0], **reference_kwargs(item))


def parse_rating(judgment: str) -> float:
    """FastChat's one_score_pattern, then its backup; -1 when neither matches.

    Where FastChat's ast.literal_eval would raise ("[[08]]", digits of other scripts, which `\\d`
    also matches) the judgment is unparseable here instead of a crash."""
    match = ONE_SCORE.search(judgment) or ONE_SCORE_BACKUP.search(judgment)
    if match is None:
        return INVALID_RATING
    try:
        return float(ast.literal_eval(match.group(1)))
    except (ValueError, SyntaxError):
        return INVALID_RATING


# --- judge calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeSettings:
    temperature: float = JUDGE_TEMPERATURE
    max_tokens: int = JUDGE_MAX_TOKENS
    seed: int | None = None
    retries: int = DEFAULT_RETRIES
    repeats: int = 1


class Asker(Protocol):
    """The run's judge as the grading code sees it (judge_stage.JudgeSession)."""

    settings: JudgeSettings
    errors: dict[str, str]

    def ask(self, requests: Sequence[Generate]) -> dict[str, str]: ...

    def repeat_seed(self, repeat: int) -> int | None: ...


@dataclass
class Attempt:
    seed: int | None
    text: str | None  # the judge's reply; None when the call failed
    error: str | None
    value: object  # a rating (float) or a verdict ("A", "B", "tie", "error")


@dataclass
class Call:
    """One judgment: one prompt, asked until its reply parses or the retries run out."""

    prompt: JudgePrompt
    user: str
    seed: int | None
    attempts: list[Attempt] = field(default_factory=list)

    def request(self, settings: JudgeSettings, attempt: int) -> Generate:
        seed = self.seed if attempt == 0 else (self.seed or 0) + RETRY_SEED_STEP * attempt
        messages = (Message("system", self.prompt.system_prompt), Message("user", self.user))
        return Generate(messages=messages, max_tokens=settings.max_tokens, temperature=settings.temperature, seed=seed)

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    def record(self) -> dict:
        return {"prompt": self.prompt.name, "attempts": [asdict(a) for a in self.attempts]}


def run_calls(judge: Asker, calls: Sequence[Call], parse: Callable[[str], object], invalid: object) -> None:
    """Ask every call, then again (with a retry seed) those whose reply did not parse.

    Calls are sent together, one round per attempt, so a concurrent backend sees them all at once.
    A failed call is not retried here: the backend has its own retry policy for transport errors."""
    pending = list(calls)
    for attempt in range(judge.settings.retries + 1):
        if not pending:
            return
        requests = [c.request(judge.settings, attempt) for c in pending]
        texts = judge.ask(requests)
        retry = []
        for call, request in zip(pending, requests):
            key = request_hash(request)
            if key in texts:
                value = parse(texts[key])
                call.attempts.append(Attempt(request.seed, texts[key], None, value))
                if value == invalid:
                    retry.append(call)
            else:
                call.attempts.append(Attempt(request.seed, None, judge.errors.get(key, "no answer"), invalid))
        pending = retry


# --- grades --------------------------------------------------------------------------------------


def variance_metric(values: Sequence[float]) -> dict[str, float]:
    return {"judge_variance": statistics.variance(values)} if len(values) >= 2 else {}


@dataclass
class SingleGrade:
    """The repeats of one single-answer judgment; ratings of -1 (after the retries) are excluded."""

    calls: list[Call]

    def ratings(self) -> list[float]:
        return [float(c.final.value) for c in self.calls if c.final.value != INVALID_RATING]  # type: ignore[arg-type]

    def invalid(self) -> int:
        return len(self.calls) - len(self.ratings())

    def metrics(self, breakdown: Sequence[str]) -> dict[str, float]:
        """`score` and `score_<b>` for each breakdown label (turn, category), when any rating is valid."""
        out: dict[str, float] = {"invalid_judgments": float(self.invalid())}
        ratings = self.ratings()
        if ratings:
            value = statistics.fmean(ratings)
            out |= {"score": value} | {f"score_{b}": value for b in breakdown} | variance_metric(ratings)
        return out

    def extracted(self) -> str:
        ratings = self.ratings()
        return "invalid" if not ratings else f"{statistics.fmean(ratings):g}"

    def record(self) -> dict:
        return {"mode": "single", "ratings": [c.final.value for c in self.calls], "judgments": [c.record() for c in self.calls]}


def grade_single(judge: Asker, prompts: dict[str, JudgePrompt], items: Sequence[JudgeItem]) -> dict[int, SingleGrade]:
    grades: dict[int, SingleGrade] = {}
    for item in items:
        prompt = prompts[prompt_name(False, item.references is not None, item.multi_turn)]
        user = render_single(prompt, item)
        grades[item.key] = SingleGrade([Call(prompt, user, judge.repeat_seed(r)) for r in range(judge.settings.repeats)])
    run_calls(judge, [c for g in grades.values() for c in g.calls], parse_rating, INVALID_RATING)
    return grades
