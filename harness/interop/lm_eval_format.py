"""What lm-evaluation-harness 0.4 writes with `--output_path DIR --log_samples`, as both directions need it.

Layout (lm_eval/loggers/evaluation_tracker.py): DIR/<model_name_sanitized>/results_<date_id>.json and,
beside it, samples_<task>_<date_id>.jsonl, where date_id is `datetime.now().isoformat()` with ':' replaced
by '-'. A results file's `results` and `groups` map a task to keys "<metric>,<filter>" and
"<metric>_stderr,<filter>"; a samples line is one (document, filter) pair with lm-eval's hashes:
doc_hash = sha256(json.dumps(doc, indent=2, ensure_ascii=False)), prompt_hash = sha256 of the first
request's context, target_hash = sha256(str(target)).

Harness names a metric "<metric>" when its filter is lm-eval's "none" and "<metric>,<filter>" otherwise
(gsm8k's "exact_match,strict-match"), so the two namings map one to one.

The few helpers of lm_eval.utils used here (sanitize_model_name, hash_string, the file-name parsers) are
ported, not imported: lm-eval is a test-only reference, never a runtime dependency of harness. The unit
tests check each against lm-eval's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

SUPPORTED_MAJOR_MINOR = "0.4"
NO_FILTER = "none"
STDERR = "_stderr"
_SANITIZE = re.compile(r"[\"<>:/|\\?*\[\]]+")
# The keys every 0.4 results file has (0.4.0 already wrote them); lm_eval_version came later in 0.4.
RESULTS_KEYS = ("results", "configs", "versions", "n-shot", "config")


def sanitize_model_name(name: str) -> str:
    """lm_eval.utils.sanitize_model_name: the model folder's name."""
    return _SANITIZE.sub("__", name)


def hash_string(text: str) -> str:
    """lm_eval.utils.hash_string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _non_serializable(value: Any) -> Any:
    """lm_eval.utils.handle_non_serializable for what harness documents hold (sets, numpy scalars)."""
    if isinstance(value, set):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def doc_hash(doc: Any) -> str:
    """lm-eval's document hash (evaluator.py: hash_string(json.dumps(doc, indent=2, ...)))."""
    return hash_string(json.dumps(doc, indent=2, default=_non_serializable, ensure_ascii=False))


def date_id(now: datetime | None = None) -> str:
    """The timestamp in lm-eval's file names."""
    return (now or datetime.now()).isoformat().replace(":", "-")


def file_datetime(name: str) -> str:
    """The date_id at the end of a results or samples file name (lm_eval.utils.get_file_datetime, which keeps a
    results file's ".json")."""
    return name[name.rfind("_") + 1:].replace(".jsonl", "").replace(".json", "")


def file_task_name(name: str) -> str:
    """lm_eval.utils.get_file_task_name: the task of samples_<task>_<date_id>.jsonl."""
    return name[name.find("_") + 1: name.rfind("_")]


def split_key(key: str) -> tuple[str, str]:
    """"acc,none" -> ("acc", "none"); a key without a filter has lm-eval's default one."""
    metric, _, filt = key.partition(",")
    return metric, filt or NO_FILTER


def our_metric(metric: str, filt: str) -> str:
    return metric if filt == NO_FILTER else f"{metric},{filt}"


def lm_eval_key(our_name: str, stderr: bool = False) -> str:
    """Our metric name -> lm-eval's results key ("acc" -> "acc,none", "exact_match,strict-match" unchanged)."""
    metric, filt = split_key(our_name)
    return f"{metric}{STDERR if stderr else ''},{filt}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
