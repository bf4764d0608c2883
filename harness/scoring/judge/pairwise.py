"""Pairwise judging as FastChat's llm_judge: the candidate against a baseline, both positions.

As fastchat/llm_judge/common.py (run_judge_pair, play_a_match_pair) and show_result.py
(display_result_pairwise):
- prompts pair-v2 / pair-math-v1 (with reference answers) and their -multi-turn variants,
  filled with str.format as run_judge_pair fills them;
- the verdict is "A" if "[[A]]" is in the reply, else "B" for "[[B]]", else "tie" for "[[C]]",
  else "error" (looked for in that order);
- every pair is judged twice, the candidate first as assistant A (g1) and then as assistant B
  (g2); a match with an "error" in either position is excluded; a tie in g1, or g1 and g2 naming
  different winners, is a tie; otherwise the winner wins;
- win_rate = wins / matches, loss_rate = losses / matches, win_rate_adjusted = (wins + 0.5 ties) / matches.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from harness.scoring.judge.fastchat import Asker, Call, JudgeItem, JudgePrompt, prompt_name, reference_kwargs, run_calls, variance_metric

ERROR = "error"
ADJUSTED = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def parse_verdict(judgment: str) -> str:
    if "[[A]]" in judgment:
        return "A"
    if "[[B]]" in judgment:
        return "B"
    if "[[C]]" in judgment:
        return "tie"
    return ERROR


def render_pair(prompt: JudgePrompt, item: JudgeItem, answers_a: Sequence[str], answers_b: Sequence[str]) -> str:
    """The user message of run_judge_pair, assistant A answering `answers_a`."""
    if item.multi_turn:
        return prompt.prompt_template.format(question_1=item.questions[0], question_2=item.questions[1],
                                             answer_a_1=answers_a[0], answer_b_1=answers_b[0],
                                             answer_a_2=answers_a[1], answer_b_2=answers_b[1], **reference_kwargs(item))
    return prompt.prompt_template.format(question=item.questions[0], answer_a=answers_a[0], answer_b=answers_b[0],
                                         **reference_kwargs(item))


def combine(g1: str, g2: str) -> str:
    """The candidate's outcome ("win", "loss", "tie", or "error") from the two positions' verdicts."""
    first = {"A": "candidate", "B": "baseline"}.get(g1, g1)
    second = {"A": "baseline", "B": "candidate"}.get(g2, g2)
    if ERROR in (first, second):
        return ERROR
    if first == "tie" or first != second:
        return "tie"
    return "win" if first == "candidate" else "loss"


def disagree(g1: str, g2: str) -> bool:
    """Both positions gave a verdict and they name different outcomes (a position bias, counted as a tie)."""
    first = {"A": "candidate", "B": "baseline"}.get(g1, g1)
    second = {"A": "baseline", "B": "candidate"}.get(g2, g2)
    return ERROR not in (first, second) and first != second


@dataclass
class PairGrade:
    """The repeats of one pairwise match; each repeat is a (g1, g2) pair of calls."""

    pairs: list[tuple[Call, Call]]

    def verdicts(self) -> list[tuple[str, str]]:
        return [(str(g1.final.value), str(g2.final.value)) for g1, g2 in self.pairs]

    def outcomes(self) -> list[str]:
        return [o for o in (combine(g1, g2) for g1, g2 in self.verdicts()) if o != ERROR]

    def invalid(self) -> int:
        return sum(c.final.value == ERROR for pair in self.pairs for c in pair)

    def disagreements(self) -> int:
        return sum(disagree(g1, g2) for g1, g2 in self.verdicts())

    def metrics(self, breakdown: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {"invalid_judgments": float(self.invalid()),
                                 "position_disagreements": float(self.disagreements())}
        outcomes = self.outcomes()
        if outcomes:
            adjusted = [ADJUSTED[o] for o in outcomes]
            value = statistics.fmean(adjusted)
            out |= {f"{o}_rate": outcomes.count(o) / len(outcomes) for o in ("win", "loss", "tie")}
            out |= {"win_rate_adjusted": value} | {f"win_rate_adjusted_{b}": value for b in breakdown} | variance_metric(adjusted)
        return out

    def extracted(self) -> str:
        outcomes = self.outcomes()
        return "invalid" if not outcomes else ",".join(outcomes)

    def record(self) -> dict:
        return {"mode": "pairwise", "verdicts": self.verdicts(), "outcomes": [combine(*v) for v in self.verdicts()],
                "judgments": [[g1.record(), g2.record()] for g1, g2 in self.pairs]}


def grade_pairwise(judge: Asker, prompts: dict[str, JudgePrompt], items: Sequence[JudgeItem]) -> dict[int, PairGrade]:
    grades: dict[int, PairGrade] = {}
    for item in items:
        if item.baseline is None:
            raise ValueError(f"pairwise judging of item {item.key} needs the baseline's answers")
        prompt = prompts[prompt_name(True, item.references is not None, item.multi_turn)]
        pairs = []
        for r in range(judge.settings.repeats):
            seed = judge.repeat_seed(r)
            g1 = Call(prompt, render_pair(prompt, item, item.answers, item.baseline), seed)
            g2 = Call(prompt, render_pair(prompt, item, item.baseline, item.answers), seed)
            pairs.append((g1, g2))
        grades[item.key] = PairGrade(pairs)
    run_calls(judge, [c for g in grades.values() for pair in g.pairs for c in pair], parse_verdict, ERROR)
    return grades
