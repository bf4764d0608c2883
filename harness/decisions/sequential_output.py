"""The sequential gate's markdown summary and JUnit XML: per metric the decision, documents used of those
available, the running estimate with its anytime-valid interval, the e-values, and the compute saved."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from harness.decisions.live_gate import SequentialGateResult
from harness.decisions.sequential import MetricTrack

WORDS = {"pass": "pass (non-inferior, decided early)", "fail": "fail (regression beyond tolerance, decided early)",
         "pass-fallback": "pass (no regression shown; undecided, fixed-sample fallback)",
         "fail-fallback": "fail (regression shown by the fixed-sample fallback)"}


def _e(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


def _points(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:+.2f}"


def _cells(result: SequentialGateResult, t: MetricTrack) -> dict[str, str]:
    low, high = t.interval(result.test.alpha_seq)
    e_pass, e_fail = t.e_values()
    saved = 1 - t.n / t.available if t.available else 0.0
    return {"decision": WORDS.get(t.decision or "", str(t.decision)), "docs": f"{t.n}/{t.available}",
            "saved": f"{saved:.0%}", "estimate": _points(t.estimate()), "ci": f"[{_points(low)}, {_points(high)}]",
            "tolerance": f"-{100 * t.tolerance:g}", "e_pass": _e(e_pass), "e_fail": _e(e_fail),
            "p_fallback": "-" if t.p_fallback_adjusted is None else f"{t.p_fallback_adjusted:.3g}"}


def markdown(result: SequentialGateResult) -> str:
    test = result.test
    used, available = result.docs()
    head = ("### ✅ harness gate passed (sequential)" if result.passed
            else "### ❌ harness gate failed (sequential)")
    lines = [head, "",
             f"Baseline `{result.baseline.run_id}` ({result.baseline.model}) vs candidate `{result.candidate_model}` "
             f"(run `{result.candidate_run}`{', partial' if result.partial else ''}) · gate `{result.gate_id}`", "",
             f"alpha {test.alpha:g} = {test.alpha_seq:g} sequential (Holm, anytime-valid) + {test.alpha_fallback:g} "
             f"fixed-sample fallback (Holm) · document order seed {result.seed} · {test.looks} looks", "",
             f"Evaluated {used} of {available} documents ({1 - used / available:.0%} of the compute saved) "
             f"in {result.wall_seconds:.1f} s.", "",
             "| Task | Metric | Decision | Docs used | Saved | Δ points | Anytime-valid CI (points) | Tolerance | "
             "e pass | e fail | p fallback (Holm) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in test.tracks:
        c = _cells(result, t)
        lines.append(f"| {t.task} | {t.metric} | {c['decision']} | {c['docs']} | {c['saved']} | {c['estimate']} | "
                     f"{c['ci']} | {c['tolerance']} | {c['e_pass']} | {c['e_fail']} | {c['p_fallback']} |")
    for s in result.skipped:
        lines.append(f"\n- skipped {s}")
    return "\n".join(lines) + "\n"


def junit_xml(result: SequentialGateResult) -> str:
    """One testcase per task; properties carry the sequential fields of each metric; a failure lists regressions."""
    used, available = result.docs()
    tasks: dict[str, list[MetricTrack]] = {}
    for t in result.test.tracks:
        tasks.setdefault(t.task, []).append(t)
    failed_tasks = sum(any(t.decision in ("fail", "fail-fallback") for t in ts) for ts in tasks.values())
    suite = ET.Element("testsuite", name="harness gate (sequential)", tests=str(len(tasks)), failures=str(failed_tasks),
                       errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("gate_id", result.gate_id), ("baseline_run", result.baseline.run_id),
                        ("candidate_run", result.candidate_run), ("seed", result.seed), ("docs_used", used),
                        ("docs_available", available), ("alpha_sequential", result.test.alpha_seq),
                        ("alpha_fallback", result.test.alpha_fallback)):
        ET.SubElement(props, "property", name=name, value=str(value))
    for task, ts in sorted(tasks.items()):
        case = ET.SubElement(suite, "testcase", classname="harness.decisions.sequential", name=task)
        cprops = ET.SubElement(case, "properties")
        for t in ts:
            for key, value in _cells(result, t).items():
                ET.SubElement(cprops, "property", name=f"{t.metric}.{key}", value=value)
        bad = [t for t in ts if t.decision in ("fail", "fail-fallback")]
        if bad:
            failure = ET.SubElement(case, "failure", type="regression",
                                    message="; ".join(f"{t.metric}: {WORDS[t.decision or '']}" for t in bad))
            failure.text = "\n".join(f"{t.metric}: {_cells(result, t)}" for t in bad)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"{t.metric}: {WORDS.get(t.decision or '', '')} after {t.n}/{t.available} documents" for t in ts)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
