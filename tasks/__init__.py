"""The task catalog: one module per benchmark family in this package, registered by name.

A task module registers itself with `@register_task("name")` over a function that builds its
`Task` value (arc.py is the shortest module, a multiple-choice one; humaneval.py the shortest
generation one); groups with `register_group`; tags with `register_tag`. Every
module of this package is imported the first time a name is looked up, so a new task is one new
module here plus its fixture under fixtures/, and nothing else to edit.

Groups and tags, as lm-evaluation-harness 0.4 tells them apart: a group (`mmlu`) selects its
tasks and also gets an aggregate row; a tag (`ai2_arc`, `truthfulqa`: lm-eval's `tag:` key)
only selects its tasks, each reported on its own.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import UsageError
from harness.core.task import Group, Task

if TYPE_CHECKING:
    from harness.taskkit.lm_eval_yaml import YamlCatalog

_TASKS: dict[str, Callable[[], Task]] = {}
_GROUPS: dict[str, Group] = {}
_TAGS: dict[str, tuple[str, ...]] = {}
_REFUSED: dict[str, str] = {}  # lm-eval YAML names that were refused -> the one-line reason
_INCLUDED: list[Path] = []  # --include-path directories, in order (HARNESS_INCLUDE_PATH's come first)
_YAML_NAMES: set[str] = set()  # what those directories registered (replaced on each include)
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


def register_tag(name: str, tasks: tuple[str, ...]) -> None:
    """A tag: `--tasks NAME` selects these tasks, with no aggregate row (unlike a group)."""
    _TAGS[name] = tuple(tasks)


def _load_task_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True
    if os.environ.get("HARNESS_INCLUDE_PATH"):
        include_paths([])


def task_names() -> list[str]:
    _load_task_modules()
    return sorted(_TASKS)


def group_names() -> list[str]:
    _load_task_modules()
    return sorted(_GROUPS)


def tag_names() -> list[str]:
    _load_task_modules()
    return sorted(_TAGS)


def get_group(name: str) -> Group | None:
    _load_task_modules()
    return _GROUPS.get(name)


def get_task(name: str) -> Task:
    _load_task_modules()
    if name in _REFUSED:
        raise UsageError(_REFUSED[name])
    if name not in _TASKS:
        known = list(_TASKS) + list(_GROUPS) + list(_TAGS)
        hint = difflib.get_close_matches(name, known, n=1)
        suffix = f" (did you mean {hint[0]}?)" if hint else " (see `harness tasks`)"
        raise UsageError(f"unknown task: {name}{suffix}")
    return _TASKS[name]()


def expand(names: list[str]) -> list[str]:
    """Task, group and tag names -> task names, expanded recursively, order kept, no repeats."""
    _load_task_modules()
    out: list[str] = []
    for name in names:
        if name in _GROUPS:
            members = expand(list(_GROUPS[name].tasks))
        elif name in _TAGS:
            members = expand(list(_TAGS[name]))
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


def include_paths(paths: Sequence[str | Path]) -> YamlCatalog:
    """Register the lm-eval task YAMLs of these directories (after any included before), as
    `--include-path` and HARNESS_INCLUDE_PATH ask: a name harness already has becomes
    `lm_eval/<name>`, refused ones keep their reason for `get_task` (docs/lm-eval-yaml.md)."""
    from harness.taskkit.lm_eval_yaml import make_task, scan

    _load_task_modules()
    ported = importlib.import_module(f"{__name__}.lm_eval_functions").PORTED  # a module like the task modules
    for path in paths:
        resolved = Path(path).expanduser().resolve()
        if resolved not in _INCLUDED:
            _INCLUDED.append(resolved)
    env = [Path(p).expanduser().resolve() for p in os.environ.get("HARNESS_INCLUDE_PATH", "").split(":") if p]
    folders = env + [p for p in _INCLUDED if p not in env]
    for registry in (_TASKS, _GROUPS, _TAGS, _REFUSED):
        for name in _YAML_NAMES:
            registry.pop(name, None)
    catalog = scan(folders, ported, reserved=set(_TASKS) | set(_GROUPS) | set(_TAGS))
    for name, spec in catalog.tasks.items():
        _TASKS[name] = partial(make_task, spec)
    for name, entry in catalog.groups.items():
        _GROUPS[name] = Group(name, entry.members, weight_by_size=entry.weight_by_size, description=f"lm-eval YAML {entry.path}")
    _TAGS.update(catalog.tags)
    _REFUSED.update({r.name: r.message for r in catalog.refused if r.name and r.name not in catalog.tasks})
    _YAML_NAMES.clear()
    _YAML_NAMES.update(set(catalog.tasks) | set(catalog.groups) | set(catalog.tags) | set(_REFUSED))
    return catalog
