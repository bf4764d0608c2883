"""Registries by name: tasks and groups (tasks/ fills them), backends by model-spec prefix."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable

from harness.errors import UsageError
from harness.task import Group, Task

_TASKS: dict[str, Callable[[], Task]] = {}
_GROUPS: dict[str, Group] = {}
_BACKENDS: dict[str, str] = {
    # prefix -> "module:Class", imported only when used (vllm and llama.cpp are heavy or optional)
    "hf": "harness.backends.hf:HFBackend",
    "gguf": "harness.backends.gguf:GGUFBackend",
    "vllm": "harness.backends.vllm:VLLMBackend",
    "replay": "harness.backends.replay:ReplayBackend",
    "openai": "harness.backends.openai:OpenAIBackend",
}
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


def register_backend(prefix: str, target: str) -> None:
    _BACKENDS[prefix] = target


def _load_task_modules() -> None:
    global _loaded
    if _loaded:
        return
    import tasks

    for module in pkgutil.iter_modules(tasks.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"tasks.{module.name}")
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


def backend_target(prefix: str) -> str:
    if prefix not in _BACKENDS:
        raise UsageError(f"unknown backend prefix {prefix!r}: expected one of {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[prefix]
