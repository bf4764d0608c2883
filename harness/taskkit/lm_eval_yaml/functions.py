"""`!function` references, resolved only against a table of natively ported functions.

lm-eval imports `<yaml dir>/<mod>.py` and takes `fn` from it. We never do: a reference is
accepted only when the sha256 of that file's bytes and the function name match an entry the
tasks layer registered (tasks/lm_eval_functions.py), and the entry's native function is used
instead. A file whose content changed (another lm-eval version, a local edit) no longer matches
and the task is refused, so a ported function can never silently stand in for different code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from harness.taskkit.lm_eval_yaml.parse import FunctionRef

# process_docs: list of docs -> list of docs (lm-eval's datasets.Dataset -> datasets.Dataset);
# doc: one doc -> a value (doc_to_text / doc_to_target / doc_to_choice);
# process_results: (doc, results) -> {metric: value or item} (loglikelihood_rolling tasks only).
FunctionKind = Literal["process_docs", "doc", "process_results"]


@dataclass(frozen=True)
class PortedFunction:
    """A native reimplementation of one lm-eval function, pinned to the source file's hash."""

    file_sha256: str  # sha256 of the lm-eval .py file the YAML names
    name: str  # the function name after the last dot of `!function mod.fn`
    kind: FunctionKind
    fn: Callable[..., Any]
    native: str  # where the native version lives, for `harness tasks` and the docs


FunctionTable = Mapping[tuple[str, str], PortedFunction]


def table(functions: list[PortedFunction]) -> dict[tuple[str, str], PortedFunction]:
    return {(f.file_sha256, f.name): f for f in functions}


@lru_cache(maxsize=1024)
def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def resolve(ref: FunctionRef, kind: FunctionKind, functions: FunctionTable) -> PortedFunction | str:
    """The ported function for `ref`, or the reason it is refused (never imports anything)."""
    if not ref.spec.rpartition(".")[0]:
        return f"!function {ref.spec}: no module path"
    digest = file_sha256(ref.module_file)
    if digest is None:
        return f"!function {ref.spec}: {ref.module_file.name} not found beside the YAML"
    ported = functions.get((digest, ref.function_name))
    if ported is None:
        return f"!function {ref.spec} is not ported (sha256 {digest[:12]} of {ref.module_file.name} is not in the table)"
    if ported.kind != kind:
        return f"!function {ref.spec} is ported as a {ported.kind} function, not for this key"
    return ported
