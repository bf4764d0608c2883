"""Tasks made ready for a run: documents loaded, instances built, and checked against the backend.

Everything here happens before the database is opened, so any input error leaves it untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import tasks as catalog
from harness.backends.base import Backend
from harness.core.config import TaskSelection
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.requests import request_hash
from harness.core.task import Dataset, Instance, Task
from harness.taskkit.data import forced_source


@dataclass
class PreparedTask:
    task: Task
    dataset: Dataset
    num_fewshot: int
    limit: int | None
    instances: list[Instance]

    @property
    def prompts_hash(self) -> str:
        return sha256_json([[request_hash(r) for r in inst.requests] for inst in self.instances])


def prepare_tasks(selections: list[TaskSelection], seed: int) -> list[PreparedTask]:
    prepared: list[PreparedTask] = []
    for selection in selections:
        for name in catalog.expand([selection.name]):
            task = catalog.get_task(name)
            with forced_source(selection.data):
                dataset = task.load()
            shots = task.default_fewshot if selection.num_fewshot is None else selection.num_fewshot
            if shots < 0 or (selection.limit is not None and selection.limit < 1):
                raise UsageError(f"{name}: num_fewshot must be >= 0 and limit >= 1")
            instances = task.build(dataset, selection.limit, shots, seed)
            prepared.append(PreparedTask(task, dataset, shots, selection.limit, instances))
    names = [p.task.name for p in prepared]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise UsageError(f"task selected twice: {', '.join(sorted(duplicates))}")
    return prepared


def check_support(backend: Backend, prepared: list[PreparedTask]) -> None:
    backend.check({kind for p in prepared for kind in p.task.request_kinds})  # a server backend asks the server
    for p in prepared:
        missing = set(p.task.request_kinds) - set(backend.supports)
        if missing:
            raise UsageError(f"backend {backend.name} cannot answer {', '.join(sorted(missing))} requests needed by {p.task.name}")
