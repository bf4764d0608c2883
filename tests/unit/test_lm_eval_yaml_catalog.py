"""Every task YAML shipped with lm-eval 0.4.13 is loaded or refused with a reason; none crashes the loader.

Loading here is building the checked TaskSpec (and the Task value) of each file, never its dataset,
so nothing touches the network. `pytest -s` prints the counts by reason.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

from harness.taskkit.lm_eval_yaml import make_task, scan
from harness.tasks.lm_eval_functions import PORTED

LM_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def _reason(message: str) -> str:
    """The reason without file, key details, quoted names and hashes, so that counts group."""
    reason = message.split(": ", 2)[-1]
    reason = re.sub(r"!function \S+", "!function X", reason)
    reason = re.sub(r"\(sha256 [0-9a-f]+ of \S+", "(sha256", reason)
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", reason)[:90]


def test_every_shipped_yaml_is_loaded_or_refused():
    files = sorted(LM_TASKS.glob("**/*.yaml"))
    catalog = scan([LM_TASKS], PORTED, reserved={"hellaswag", "gsm8k", "arc_easy"})
    for spec in catalog.tasks.values():
        make_task(spec)  # the Task value builds for every loaded spec
    refused_files = {r.path for r in catalog.refused}
    loaded_files = {s.source for s in catalog.tasks.values()}
    seen = loaded_files | refused_files | {p for p, _ in catalog.skipped} | {g.path for g in catalog.groups.values()}
    by_reason = collections.Counter(_reason(r.message) for r in catalog.refused)
    print(f"\nlm-eval YAML files: {len(files)}; tasks loaded: {len(catalog.tasks)}, groups: {len(catalog.groups)}, "
          f"tags: {len(catalog.tags)}, refused: {len(catalog.refused)}, skipped: {len(catalog.skipped)}")
    for reason, count in by_reason.most_common(25):
        print(f"{count:6d}  {reason}")
    assert len(catalog.tasks) > 1000 and catalog.refused
    assert {"lm_eval/arc_easy", "arc_challenge", "lm_eval/gsm8k", "lm_eval/hellaswag"} <= set(catalog.tasks)
    # corpus-level metrics load (wikitext through its ported !functions); none is refused for its aggregation
    assert "wikitext" in catalog.tasks and catalog.tasks["wikitext"].output_type == "loglikelihood_rolling"
    assert not any("mean only" in r.message or "aggregation '" in r.message for r in catalog.refused)
    assert all(r.message and "\n" not in r.message for r in catalog.refused)
    # every file is accounted for: loaded, refused, skipped, or a group kept as a tag (no aggregate_metric_list)
    unaccounted = {p.resolve() for p in files} - seen
    assert len(unaccounted) <= len(catalog.tags)
