"""Find and check lm-evaluation-harness 0.4 output: results files, and the samples files beside them.

A directory is either lm-eval's `--output_path` (model folders inside) or one model folder. Every
file is parsed and checked here, before the importer opens the database, so a malformed file or
one from another lm-eval version is one UsageError line naming the file (and line) and nothing
is stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.interop.lm_eval_format import RESULTS_KEYS, SUPPORTED_MAJOR_MINOR, file_datetime, file_task_name

SAMPLE_KEYS = ("doc_id", "doc_hash", "prompt_hash", "target_hash", "filter", "metrics", "resps", "arguments", "target")


@dataclass(frozen=True)
class ResultsFile:
    path: Path
    model_folder: str
    date_id: str
    data: dict
    samples: dict[str, list[dict]] = field(default_factory=dict)  # task -> its lines (one per document and filter)
    sample_files: dict[str, Path] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        value = self.data.get("lm_eval_version")
        return value if isinstance(value, str) else None


def _results_paths(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (give lm-eval's --output_path or one of its model folders)")
    here = sorted(root.glob("results_*.json"))
    return here or sorted(root.glob("*/results_*.json"))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None


def check_results(path: Path, data: Any) -> dict:
    """The results file's dict, or one line saying why it is not lm-eval 0.4 output."""
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not an lm-eval results file (a JSON object is expected)")
    version = data.get("lm_eval_version")
    if version is not None and (not isinstance(version, str) or not version.startswith(SUPPORTED_MAJOR_MINOR + ".")):
        raise UsageError(f"{path}: written by lm-eval {version}; harness reads lm-eval {SUPPORTED_MAJOR_MINOR}.x output")
    missing = [k for k in RESULTS_KEYS if k not in data]
    if missing:
        raise UsageError(f"{path}: not lm-eval {SUPPORTED_MAJOR_MINOR} output (no {', '.join(repr(k) for k in missing)})")
    for key in ("results", "configs", "versions", "n-shot"):
        if not isinstance(data[key], dict):
            raise UsageError(f"{path}: '{key}' must be an object")
    for task, metrics in data["results"].items():
        if not isinstance(metrics, dict):
            raise UsageError(f"{path}: results of task {task!r} must be an object")
    if not isinstance(data["config"], dict):
        raise UsageError(f"{path}: 'config' must be an object")
    return data


def read_samples(path: Path) -> list[dict]:
    """Every line of a samples_<task>_<date_id>.jsonl, each checked for the keys the importer reads."""
    out = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            except UnicodeDecodeError:
                raise UsageError(f"{path}:{lineno}: not UTF-8 text") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{lineno}: a sample must be a JSON object")
            missing = [k for k in SAMPLE_KEYS if k not in row]
            if missing:
                raise UsageError(f"{path}:{lineno}: not an lm-eval sample (no {', '.join(missing)})")
            if not isinstance(row["doc_id"], int) or isinstance(row["doc_id"], bool):
                raise UsageError(f"{path}:{lineno}: doc_id must be an integer")
            if not isinstance(row["metrics"], list):
                raise UsageError(f"{path}:{lineno}: metrics must be a list of metric names")
            out.append(row)
    return out


def _samples_of(results: Path, date: str, tasks: set[str]) -> dict[str, Path]:
    """The samples files written with this results file (same date_id), by task."""
    found = {}
    for path in sorted(results.parent.glob(f"samples_*_{date}.jsonl")):
        task = file_task_name(path.name)
        if task in tasks:
            found[task] = path
    return found


def find_results(root: Path) -> list[ResultsFile]:
    """Every results file under `root` (checked), with its samples; UsageError when there is none."""
    paths = _results_paths(root)
    if not paths:
        raise UsageError(f"{root}: no lm-eval results_<date>.json here or in a model folder inside")
    out = []
    for path in paths:
        data = check_results(path, _load_json(path))
        date = file_datetime(path.name)
        files = _samples_of(path, date, set(data["results"]))
        samples = {task: read_samples(p) for task, p in files.items()}
        out.append(ResultsFile(path, path.parent.name, date, data, samples, files))
    return out
