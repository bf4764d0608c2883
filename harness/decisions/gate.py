"""The regression gate: a policy, a decision per task and metric, and its markdown and JUnit forms.

A gated metric fails only when the candidate is worse than the baseline by more than the
tolerance (absolute points: 100 x the metric on its 0-1 scale, direction from the task's
`higher_is_better`) AND the difference is significant: Holm-adjusted p < alpha, the Holm
correction taken across the gated metrics. Input the gate cannot judge (a required task missing
or with too few paired documents, nothing left to gate) is a UsageError: exit 2, not a pass.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.errors import UsageError
from harness.core.resources import first_validation_error
from harness.core.textfile import read_text
from harness.decisions import paired
from harness.decisions.compare import Comparison, MetricComparison


class TaskRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_drop: float | None = Field(None, ge=0, description="tolerance for this task, absolute points")
    metric_max_drop: dict[str, float] = Field(default_factory=dict, description="tolerance per metric, absolute points")
    metrics: list[str] | None = Field(None, description="metrics to gate for this task (default: policy's, else all)")
    min_samples: int | None = Field(None, ge=1)


class SequentialRule(BaseModel):
    """`sequential:` in the policy: how `harness gate --sequential` splits alpha and spends documents."""

    model_config = ConfigDict(extra="forbid")

    alpha_split: float = Field(0.5, gt=0, lt=1, description="share of alpha for the sequential phase; the rest is the "
                               "fixed-sample fallback's")
    max_docs: int | None = Field(None, ge=1, description="documents per task at most (default: every shared document)")
    min_docs: int = Field(100, ge=0, description="no early decision on a task before this many documents")
    chunk: int | None = Field(None, ge=1, description="documents per task per look (default: adaptive, 100 growing to 1000)")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_drop: float = Field(1.0, ge=0, description="default allowed drop, absolute points (1.0 = one point of accuracy)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level after Holm correction")
    min_samples: int = Field(20, ge=1, description="minimum paired documents for a task to be gated")
    required_tasks: list[str] = Field(default_factory=list)
    metrics: list[str] | None = Field(None, description="metrics to gate (default: every metric of each task)")
    tasks: dict[str, TaskRule] = Field(default_factory=dict)
    sequential: SequentialRule = Field(default_factory=SequentialRule)

    def tolerance(self, task: str, metric: str) -> float:
        rule = self.tasks.get(task)
        if rule is not None:
            if metric in rule.metric_max_drop:
                return rule.metric_max_drop[metric]
            if rule.max_drop is not None:
                return rule.max_drop
        return self.max_drop

    def gated_metrics(self, task: str) -> list[str] | None:
        rule = self.tasks.get(task)
        if rule is not None and rule.metrics is not None:
            return rule.metrics
        return self.metrics

    def min_samples_for(self, task: str) -> int:
        rule = self.tasks.get(task)
        return rule.min_samples if rule is not None and rule.min_samples is not None else self.min_samples


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    if not path.is_file():
        raise UsageError(f"policy file {path} does not exist")
    try:
        data = yaml.safe_load(read_text(path, "policy")) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"policy {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"policy {path}: expected a mapping at the top level")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"policy {path}: {first_validation_error(exc, '(top level)')}") from None


@dataclass(frozen=True)
class Decision:
    task: str
    metric: str
    status: str  # "pass" | "fail"
    baseline: float
    candidate: float
    drop_points: float  # positive = candidate worse, in the metric's own direction
    tolerance: float
    ci_low: float
    ci_high: float  # 95% CI of candidate - baseline
    p_value: float
    p_adjusted: float  # Holm across the gated metrics
    n_paired: int
    reason: str


@dataclass(frozen=True)
class GateResult:
    baseline: str
    candidate: str
    policy: Policy
    decisions: list[Decision]
    skipped: list[str]  # "task: why"
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return not any(d.status == "fail" for d in self.decisions)

    @property
    def regressions(self) -> list[Decision]:
        return [d for d in self.decisions if d.status == "fail"]


def decide(comparison: Comparison, policy: Policy) -> GateResult:
    """Baseline = run A, candidate = run B of the comparison."""
    by_task: dict[str, list[MetricComparison]] = {}
    for m in comparison.metrics:
        by_task.setdefault(m.task, []).append(m)
    for task in policy.required_tasks:
        if task not in by_task:
            raise UsageError(f"required task {task} has no paired documents in baseline and candidate")
        n = max(m.n_paired for m in by_task[task])
        if n < policy.min_samples_for(task):
            raise UsageError(f"required task {task} has {n} paired documents, the policy needs at least "
                             f"{policy.min_samples_for(task)}")
    chosen: list[MetricComparison] = []
    skipped: list[str] = []
    for task, rows in sorted(by_task.items()):
        wanted = policy.gated_metrics(task)
        rows = [m for m in rows if wanted is None or m.metric in wanted]
        if not rows:
            skipped.append(f"{task}: none of the gated metrics ({', '.join(wanted or [])}) was measured")
            continue
        n = max(m.n_paired for m in rows)
        if n < policy.min_samples_for(task):
            skipped.append(f"{task}: {n} paired documents, fewer than {policy.min_samples_for(task)}")
            continue
        chosen.extend(rows)
    if not chosen:
        detail = "; ".join(skipped) if skipped else "no metrics"
        raise UsageError(f"nothing to gate: {detail}")
    adjusted = paired.holm([m.p_value for m in chosen])
    decisions = []
    for m, p_adj in zip(chosen, adjusted):
        worse = (m.value_a - m.value_b) if m.higher_is_better else (m.value_b - m.value_a)
        drop = 100.0 * worse
        tol = policy.tolerance(m.task, m.metric)
        significant = bool(p_adj < policy.alpha)
        if drop > tol and significant:
            status, reason = "fail", f"dropped {drop:.2f} points (> {tol:g}), p_holm={p_adj:.3g} < {policy.alpha:g}"
        elif drop > tol:
            status, reason = "pass", f"dropped {drop:.2f} points (> {tol:g}) but not significant (p_holm={p_adj:.3g})"
        elif drop > 0:
            status, reason = "pass", f"dropped {drop:.2f} points, within tolerance {tol:g}"
        else:
            status, reason = "pass", "no drop" if drop == 0 else f"improved {-drop:.2f} points"
        decisions.append(Decision(m.task, m.metric, status, m.value_a, m.value_b, drop, tol, m.ci_low, m.ci_high,
                                  m.p_value, float(p_adj), m.n_paired, reason))
    return GateResult(comparison.run_a, comparison.run_b, policy, decisions, skipped, list(comparison.warnings))


def _f(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(result: GateResult) -> str:
    head = ("### ✅ harness gate passed" if result.passed
            else f"### ❌ harness gate failed: {len(result.regressions)} regression(s)")
    lines = [head, "", f"Baseline `{result.baseline}` vs candidate `{result.candidate}` · "
             f"alpha {result.policy.alpha:g} (Holm) · default tolerance {result.policy.max_drop:g} points", "",
             "| Task | Metric | Baseline | Candidate | Δ points | 95% CI (points) | p | p (Holm) | n | Result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in result.decisions:
        delta = 100 * (d.candidate - d.baseline)
        ci = "-" if math.isnan(d.ci_low) else f"[{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}]"
        mark = "❌ fail" if d.status == "fail" else "✅ pass"
        lines.append(f"| {d.task} | {d.metric} | {_f(d.baseline)} | {_f(d.candidate)} | {delta:+.2f} | {ci} | "
                     f"{d.p_value:.3g} | {d.p_adjusted:.3g} | {d.n_paired} | {mark}: {d.reason} |")
    for s in result.skipped:
        lines.append(f"\n- skipped {s}")
    if result.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def junit_xml(result: GateResult) -> str:
    """One testcase per task; a <failure> lists its regressed metrics; skipped tasks are <skipped/>."""
    tasks: dict[str, list[Decision]] = {}
    for d in result.decisions:
        tasks.setdefault(d.task, []).append(d)
    skipped = {s.split(":", 1)[0]: s.split(":", 1)[1].strip() for s in result.skipped}
    failures = sum(any(d.status == "fail" for d in ds) for ds in tasks.values())
    suite = ET.Element("testsuite", name="harness gate", tests=str(len(tasks) + len(skipped)),
                       failures=str(failures), errors="0", skipped=str(len(skipped)))
    for task, ds in sorted(tasks.items()):
        case = ET.SubElement(suite, "testcase", classname="harness.decisions.gate", name=task)
        failed = [d for d in ds if d.status == "fail"]
        if failed:
            failure = ET.SubElement(case, "failure", message="; ".join(f"{d.metric}: {d.reason}" for d in failed),
                                    type="regression")
            failure.text = "\n".join(f"{d.metric}: {d.baseline:.4f} -> {d.candidate:.4f} ({d.reason})" for d in failed)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"{d.metric}: {d.baseline:.4f} -> {d.candidate:.4f}, {d.reason}" for d in ds)
    for task, why in sorted(skipped.items()):
        case = ET.SubElement(suite, "testcase", classname="harness.decisions.gate", name=task)
        ET.SubElement(case, "skipped", message=why)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def decision_rows(result: GateResult) -> list[dict]:
    """The decisions as harness.store.gates stores them."""
    return [{"task": d.task, "metric": d.metric, "status": d.status, "baseline": d.baseline, "candidate": d.candidate,
             "delta": d.candidate - d.baseline, "ci_low": d.ci_low, "ci_high": d.ci_high, "p_value": d.p_value,
             "p_adjusted": d.p_adjusted, "n": d.n_paired, "tolerance": d.tolerance, "reason": d.reason}
            for d in result.decisions]
