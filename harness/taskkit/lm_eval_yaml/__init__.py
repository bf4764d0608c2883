"""lm-evaluation-harness 0.4.13 task YAMLs, loaded as they are (docs/lm-eval-yaml.md).

The modules follow the path of one file: `parse` (safe YAML, `!function` as a marker, the
include chain and its hash), `functions` (markers resolved only against ported natives, by
file hash), `jinja` (lm-eval's template environment and doc_to_* semantics), `spec` (the
checked config, or a one-line refusal naming file and key), `index` (directories -> tasks,
groups and tags, lm-eval's naming rules), `source` (documents: local files, hub, mirrors) and
`build` (the Task value: prompts, requests and scores as ConfigurableTask makes them).
"""

from __future__ import annotations

from harness.taskkit.lm_eval_yaml.build import make_task
from harness.taskkit.lm_eval_yaml.functions import FunctionTable, PortedFunction, table
from harness.taskkit.lm_eval_yaml.index import NAMESPACE, GroupEntry, Refusal, YamlCatalog, scan
from harness.taskkit.lm_eval_yaml.parse import FunctionRef, IncludeResolver, YamlRefusal
from harness.taskkit.lm_eval_yaml.spec import TaskSpec, task_spec

__all__ = ["make_task", "FunctionTable", "PortedFunction", "table", "NAMESPACE", "GroupEntry", "Refusal", "YamlCatalog",
           "scan", "FunctionRef", "IncludeResolver", "YamlRefusal", "TaskSpec", "task_spec"]
