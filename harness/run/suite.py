"""Named suites: which tasks, shots, limits and data source. Validated; unknown keys are errors.

```yaml
description: what this suite is for
data: fixture            # optional: mirror | hub | fixture | auto, for every task
limit: 20                # optional default per task
num_fewshot: 0           # optional default per task
tasks:
  - hellaswag            # a task or group name...
  - {name: mmlu_anatomy, num_fewshot: 5, limit: 10}   # ...or one with its own settings
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import tasks as catalog
from harness.core.config import TaskSelection
from harness.core.errors import UsageError
from harness.core.resources import first_validation_error, named_yaml, package_dir
from harness.core.textfile import read_text, read_yaml

SUITES_DIR = package_dir("harness.suites")
DataSource = Literal["auto", "mirror", "hub", "fixture"]


class SuiteTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    data: DataSource | None = None


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    data: DataSource | None = None
    limit: int | None = Field(default=None, ge=1)
    num_fewshot: int | None = Field(default=None, ge=0)
    tasks: list[SuiteTask] = Field(min_length=1)

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_to_entries(cls, value: object) -> object:
        """`- hellaswag` is short for `- {name: hellaswag}`."""
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    def selections(self) -> list[TaskSelection]:
        out = []
        for t in self.tasks:
            out.append(TaskSelection(
                name=t.name,
                num_fewshot=t.num_fewshot if t.num_fewshot is not None else self.num_fewshot,
                limit=t.limit if t.limit is not None else self.limit,
                data=t.data or self.data,
            ))
        return out


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if _is_suite_file(p))


def _is_suite_file(path: Path) -> bool:
    try:
        data = yaml.safe_load(read_text(path, "suite"))
    except (UsageError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("tasks"), list)  # gate.yaml's `tasks` is a mapping of overrides


def suite_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, SUITES_DIR, "suite", suite_names, accept=_is_suite_file)


def load_suite(name_or_path: str) -> tuple[str, Suite]:
    path = suite_path(name_or_path)
    data = read_yaml(path, "suite")
    if not isinstance(data, dict):
        raise UsageError(f"malformed suite {path}: expected a mapping with a 'tasks' list")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"malformed suite {path}: {first_validation_error(exc, 'suite')}") from None
    for selection in suite.selections():
        catalog.expand([selection.name])  # unknown task -> UsageError naming it
    return path.stem, suite
