"""The task catalog: one module per benchmark family in this package, registered by name.

A task module registers itself with `@register_task("name")` over a function that builds its
`Task` value (humaneval.py is the shortest module, hellaswag.py the shortest multiple-choice
one); groups with `register_group`. Every
module of this package is imported the first time a name is looked up, so a new task is one new
module here plus its fixture under fixtures/, and nothing else to edit.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable

from harness.core.errors import UsageError
from harness.core.task import Group, Task

_TASKS: dict[str, Callable[[], Task]] = {}
_GROUPS: dict[str, Group] = {}
_loaded = False


def register_task(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Decorator: `@register_task("hellaswag")` over a function that builds the Task value."""

    def wrap(factory: Callable[[], Task]) -> Callable[[], Task]:
        _TASKS[name] = factory
        return factory

    return wrap


def register_task_factory(name: str, factory: Callable[[], Task]) -> None:
    _TASKS[name] = factory


def register_group(group: Group) -> None:
    _GROUPS[group.name] = group


def _load_task_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def task_names() -> list[str]:
    _load_task_modules()
    return sorted(_TASKS)


def group_names() -> list[str]:
    _load_task_modules()
    return sorted(_GROUPS)


def get_group(name: str) -> Group | None:
    _load_task_modules()
    return _GROUPS.get(name)


def get_task(name: str) -> Task:
    _load_task_modules()
    if name not in _TASKS:
        known = list(_TASKS) + list(_GROUPS)
        hint = difflib.get_close_matches(name, known, n=1)
        suffix = f" (did you mean {hint[0]}?)" if hint else " (see `harness tasks`)"
        raise UsageError(f"unknown task: {name}{suffix}")
    return _TASKS[name]()


def expand(names: list[str]) -> list[str]:
    """Task and group names -> task names, groups expanded recursively, order kept, no repeats."""
    _load_task_modules()
    out: list[str] = []
    for name in names:
        if name in _GROUPS:
            members = expand(list(_GROUPS[name].tasks))
        elif name in _TASKS:
            members = [name]
        else:
            get_task(name)  # raises the UsageError with a suggestion
            members = []
        out.extend(m for m in members if m not in out)
    return out


def groups_containing(task_names_: list[str]) -> list[Group]:
    """Groups all of whose tasks are in the list, innermost first (subgroups before parents)."""
    _load_task_modules()
    chosen = set(task_names_)
    found = [g for g in _GROUPS.values() if set(expand([g.name])) <= chosen]
    return sorted(found, key=lambda g: len(expand([g.name])))
