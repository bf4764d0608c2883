"""Which samples of two runs are the same document shown the same way: the key compare and gate join on.

A run's samples carry the hashes of the tool that wrote them (runs.metadata "hashes": "lm-eval" for
runs imported from lm-evaluation-harness, harness's own otherwise; docs/lm-eval-interop.md):
- both runs hash the same way: (task, doc_hash, prompt_hash), so a document shown with another
  prompt is not a pair;
- one of each: (task, prompt_hash). The document hashes are of different JSON renderings of
  different processed documents and never agree, while the prompt hash is sha256 of the exact
  prompt text in both tools; the prompt contains the document, so equal prompts are the same
  document with the same shots.
A run without any per-sample rows (an lm-eval results file imported without its samples) cannot be
paired: one line says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.core.errors import UsageError
from harness.store.db import Store

HARNESS = "harness"
LM_EVAL = "lm-eval"


def hash_scheme(metadata: object) -> str:
    """The tool whose hashes a run's samples carry, from its metadata (a dict or its JSON)."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return HARNESS
    return LM_EVAL if isinstance(metadata, dict) and metadata.get("hashes") == LM_EVAL else HARNESS


def sample_key(scheme: str, doc_hash: str, prompt_hash: str) -> tuple[str, str]:
    """A sample's key against a baseline hashed by `scheme` and a candidate hashed by harness: the document
    hash counts only when the baseline's is harness's too (the rule of `pair_key`, for one sample)."""
    return ("" if scheme == LM_EVAL else doc_hash, prompt_hash)


@dataclass(frozen=True)
class PairKey:
    columns: tuple[str, ...]
    across_tools: bool

    def describe(self) -> str:
        names = {"doc_hash": "document", "prompt_hash": "prompt"}
        return "task, " + " and ".join(names[c] for c in self.columns) + " hashes"


def pair_key(store: Store, run_a: str, run_b: str) -> PairKey:
    """The join key of two runs; UsageError when either has no per-sample rows to pair."""
    schemes = []
    for run_id in (run_a, run_b):
        row = store.con.execute("SELECT metadata::VARCHAR, (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id) "
                                "FROM runs r WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r}")
        metadata, n_samples = row
        if not n_samples:
            meta = json.loads(metadata or "{}")
            why = (" (imported from lm-eval without its samples_*.jsonl: re-run lm-eval with --log_samples)"
                   if meta.get("source") == LM_EVAL else "")
            raise UsageError(f"run {run_id} has metrics only, no per-sample results{why}: "
                             "compare and gate pair documents, so they cannot use it")
        schemes.append(hash_scheme(metadata))
    if schemes[0] == schemes[1]:
        return PairKey(("doc_hash", "prompt_hash"), False)
    return PairKey(("prompt_hash",), True)


def pairs_sql(key: PairKey, select: str) -> str:
    """Paired rows of runs a (first parameter) and b (second), the k-th duplicate of a key with the k-th."""
    partition = ", ".join(("task",) + key.columns)
    on = " AND ".join(f"a.{c} = b.{c}" for c in ("task",) + key.columns)
    return f"""
WITH a AS (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY doc_id) AS k FROM samples WHERE run_id = ?),
     b AS (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY doc_id) AS k FROM samples WHERE run_id = ?)
SELECT {select}
FROM a JOIN b ON {on} AND a.k = b.k
ORDER BY a.task, a.doc_id
"""
