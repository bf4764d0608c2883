"""Directories of lm-eval task YAMLs -> the tasks, groups and tags they define, or why not.

Reproduces `lm_eval/tasks/_index.py:TaskIndex.build` (0.4.13): every `**/*.yaml` under each
directory in sorted path order (`__pycache__` and `.ipynb_checkpoints` skipped); a config with
`class` is a Python task, with `group` a group, with `task` a task (whose `tag`s are
registered); a later directory overrides an earlier one's name, a duplicate name inside one
directory keeps the first. Where lm-eval skips a broken file silently, it is listed here as
refused with its reason; a file with neither `task` nor `group` (a base meant to be included) is
listed as skipped.

Names: a task, group or tag whose name is already taken by harness (`reserved`: native tasks,
groups, tags) is registered as `lm_eval/<name>`, and group members and tags follow the rename.
A group member must be a YAML task, group or tag of these directories or a reserved name; a
group with dict members or with task overrides (keys beyond lm-eval's GroupConfig) is refused,
and so is a group with a refused or unknown member. A group with `aggregate_metric_list` is
aggregated (weighted by size as its first entry says, lm-eval's default true); one without is
registered as a tag, since lm-eval reports no aggregate for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.taskkit.lm_eval_yaml import functions as fnmod
from harness.taskkit.lm_eval_yaml.parse import IncludeResolver, LoadedYaml, YamlRefusal, read_yaml
from harness.taskkit.lm_eval_yaml.spec import TaskSpec, task_spec

IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}
GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}
NAMESPACE = "lm_eval/"


@dataclass(frozen=True)
class Refusal:
    name: str | None  # the registered name it would have had, None when unknown
    path: Path
    message: str  # one line: file, key, reason


@dataclass(frozen=True)
class GroupEntry:
    name: str
    path: Path
    members: tuple[str, ...]
    weight_by_size: bool


@dataclass
class YamlCatalog:
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    groups: dict[str, GroupEntry] = field(default_factory=dict)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def refusal_of(self, name: str) -> Refusal | None:
        return next((r for r in self.refused if r.name == name), None)


@dataclass
class _Raw:
    """One directory's entries before names are finalised: name -> (kind, loaded yaml)."""

    entries: dict[str, tuple[str, LoadedYaml]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)
    broken: list[tuple[str | None, Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def yaml_files(root: Path) -> list[Path]:
    return sorted((p for p in root.glob("**/*.yaml") if not any(part in IGNORE_DIRS for part in p.parts)),
                  key=lambda p: p.as_posix())


def _name_in_raw(path: Path) -> str | None:
    try:
        raw, _ = read_yaml(path)
    except YamlRefusal:
        return None
    name = raw.get("task", raw.get("group"))
    return name if isinstance(name, str) else None


def _kind(cfg: dict[str, Any]) -> str | None:
    if "class" in cfg:
        return "class"
    if "group" in cfg:
        return "group"
    if "task" in cfg:
        return "task"
    return None


def _scan_dir(root: Path, resolver: IncludeResolver) -> _Raw:
    raw = _Raw()
    for path in yaml_files(root):
        try:
            loaded = resolver.load(path)
        except YamlRefusal as exc:
            raw.broken.append((_name_in_raw(path), path, str(exc)))
            continue
        cfg = loaded.config
        kind = _kind(cfg)
        if kind is None:
            raw.skipped.append((path, "no task or group key (a file meant to be included)"))
            continue
        name = cfg.get("group") if kind == "group" else cfg.get("task")
        if not isinstance(name, str):
            raw.broken.append((None, path, str(YamlRefusal(path, kind, f"expected a name, got {name!r}"[:200]))))
            continue
        if name in raw.entries:
            raw.skipped.append((path, f"duplicate name {name} (first defined in {raw.entries[name][1].path})"))
            continue
        raw.entries[name] = (kind, loaded)
        if kind == "task":
            tags = cfg.get("tag") or []
            for tag in [tags] if isinstance(tags, str) else tags if isinstance(tags, list) else []:
                if isinstance(tag, str):
                    raw.tags.setdefault(tag, []).append(name)
    return raw


class _Builder:
    def __init__(self, reserved: set[str], functions: fnmod.FunctionTable) -> None:
        self.reserved, self.functions = reserved, functions
        self.out = YamlCatalog()
        self.entries: dict[str, tuple[str, LoadedYaml]] = {}
        self.tags: dict[str, list[str]] = {}

    def public(self, name: str) -> str:
        return f"{NAMESPACE}{name}" if name in self.reserved else name

    def add(self, raw: _Raw) -> None:
        self.entries.update(raw.entries)  # a later directory overrides an earlier one
        for tag, members in raw.tags.items():
            self.tags.setdefault(tag, []).extend(m for m in members if m not in self.tags.get(tag, []))
        for name, path, message in raw.broken:
            self.out.refused.append(Refusal(self.public(name) if name else None, path, message))
        self.out.skipped.extend(raw.skipped)

    def member(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        if name in self.entries or name in self.tags:
            return self.public(name)
        return name if name in self.reserved else None

    def group(self, name: str, loaded: LoadedYaml) -> tuple[GroupEntry | str, bool]:
        """(the group, aggregated?), or (the refusal message, False)."""
        cfg, path = loaded.config, loaded.path
        extra = sorted(set(cfg) - GROUP_KEYS - {"tag"})
        if extra:
            return str(YamlRefusal(path, extra[0], "group-level task overrides are not supported")), False
        members = cfg.get("task")
        if not isinstance(members, list) or not members:
            return str(YamlRefusal(path, "task", "a group needs a list of member tasks")), False
        resolved = []
        for i, m in enumerate(members):
            if isinstance(m, dict):
                return str(YamlRefusal(path, f"task[{i}]", "inline or overridden group members are not supported")), False
            public = self.member(m)
            if public is None:
                return str(YamlRefusal(path, f"task[{i}]", f"unknown member {m!r}")), False
            resolved.append(public)
        agg = cfg.get("aggregate_metric_list")
        agg_list = agg if isinstance(agg, list) else [agg] if isinstance(agg, dict) else []
        weight = all(not isinstance(a, dict) or bool(a.get("weight_by_size", True)) for a in agg_list[:1])
        return GroupEntry(self.public(name), path, tuple(resolved), weight if agg_list else False), bool(agg_list)

    def finish(self) -> YamlCatalog:
        out = self.out
        groups: dict[str, tuple[GroupEntry, bool]] = {}
        for name, (kind, loaded) in self.entries.items():
            public = self.public(name)
            if kind == "class":
                out.refused.append(Refusal(public, loaded.path, str(YamlRefusal(loaded.path, "class",
                                                                                "Python task classes are not supported"))))
            elif kind == "task":
                try:
                    out.tasks[public] = task_spec(loaded, self.functions, public)
                except YamlRefusal as exc:
                    out.refused.append(Refusal(public, loaded.path, str(exc)))
            else:
                made, aggregated = self.group(name, loaded)
                if isinstance(made, GroupEntry):
                    groups[public] = (made, aggregated)
                else:
                    out.refused.append(Refusal(public, loaded.path, made))
        self._settle(groups)
        return out

    def _settle(self, groups: dict[str, tuple[GroupEntry, bool]]) -> None:
        """Drop groups and tags with refused or unknown members until nothing changes."""
        out = self.out
        tags = {self.public(t): tuple(self.public(m) for m in ms) for t, ms in self.tags.items() if t not in self.entries}
        changed = True
        while changed:
            changed = False
            known = set(out.tasks) | set(groups) | set(tags) | self.reserved
            for name, (entry, _) in list(groups.items()):
                bad = [m for m in entry.members if m not in known]
                if bad:
                    out.refused.append(Refusal(name, entry.path, f"{entry.path}: task: member {bad[0]} is refused or unknown"))
                    del groups[name]
                    changed = True
            for tag, members in list(tags.items()):
                kept = tuple(m for m in members if m in known)
                if not kept:
                    del tags[tag]
                    changed = True
                elif kept != members:
                    tags[tag] = kept
                    changed = True
        for name, (entry, aggregated) in groups.items():
            if aggregated:
                out.groups[name] = entry
            else:
                out.tags[name] = entry.members
        out.tags.update(tags)


def scan(paths: Iterable[Path], functions: fnmod.FunctionTable, reserved: Iterable[str] = ()) -> YamlCatalog:
    """Every task, group and tag the directories define, checked (no dataset is read)."""
    resolver = IncludeResolver()
    builder = _Builder(set(reserved), functions)
    for root in paths:
        folder = Path(root).expanduser().resolve()
        if not folder.is_dir():
            raise UsageError(f"include path {root} is not a directory")
        builder.add(_scan_dir(folder, resolver))
    return builder.finish()
