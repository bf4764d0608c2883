"""Reading one lm-eval task YAML safely, with its `include:` chain.

Reproduces `lm_eval/tasks/_yaml_loader.py:load_yaml` (0.4.13) except for one thing: lm-eval's
loader *imports* the module named by `!function mod.fn` while parsing. Here the YAML is read
with a safe loader (libyaml's CSafeLoader where available) and `!function` becomes a
`FunctionRef` marker; nothing named in a YAML is ever imported or executed. Whether a marker
is usable is decided later, against the table of natively ported functions (functions.py).

Include semantics (as lm-eval's): `include:` is one path or a list, relative to the including
file; each include is loaded recursively (its own includes first), its `task_list` dropped, and
merged in order, then the including file's own keys win. Deliberate difference: lm-eval keeps
one "seen" set for the whole traversal, so a diamond (two includes that share a base) is an
"include cycle" there; here only a true loop (a file including itself through its chain) is.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import UsageError

_BASE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlRefusal(UsageError):
    """A YAML task that cannot be loaded as it is: one line naming the file and the key."""

    def __init__(self, path: Path | str, key: str | None, reason: str) -> None:
        self.path, self.key, self.reason = str(path), key, reason
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class FunctionRef:
    """`!function mod.fn` as written in `source` (the file whose directory resolves `mod`)."""

    spec: str
    source: Path

    @property
    def module_file(self) -> Path:
        """The file lm-eval's `_import_func_in_yml` looks at first: `<dir>/<mod with / for .>.py`."""
        mod_path = self.spec.rpartition(".")[0]
        return (self.source.parent / f"{mod_path.replace('.', '/')}.py").resolve()

    @property
    def function_name(self) -> str:
        return self.spec.rpartition(".")[2]


@dataclass
class LoadedYaml:
    """The merged config of one YAML file, the files of its include chain and their hash."""

    path: Path
    config: dict[str, Any]
    chain: list[Path] = field(default_factory=list)  # the file itself first, then its includes, depth first
    content_hash: str = ""


def _loader_for(path: Path) -> type:
    class Loader(_BASE_LOADER):
        """A safe loader of its own, so that the `!function` constructor names this file only."""

    def function(loader: yaml.Loader, node: yaml.Node) -> FunctionRef:
        return FunctionRef(str(loader.construct_scalar(node)), path)  # type: ignore[arg-type]

    Loader.add_constructor("!function", function)
    return Loader


def read_yaml(path: Path) -> tuple[dict[str, Any], bytes]:
    """One file's mapping (no includes resolved) and its bytes; any failure is a YamlRefusal."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlRefusal(path, None, f"cannot read ({exc.strerror or exc})") from None
    try:
        value = yaml.load(raw, Loader=_loader_for(path))  # noqa: S506 - a safe loader plus one marker constructor
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise YamlRefusal(path, None, f"YAML syntax error{where}: {problem}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a malformed !function node
        raise YamlRefusal(path, None, f"YAML error: {exc}") from None
    if not isinstance(value, dict):
        raise YamlRefusal(path, None, f"expected a mapping, got {type(value).__name__}")
    return value, raw


class IncludeResolver:
    """Loads YAML files with their include chains, each file parsed once per resolver."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[dict[str, Any], str]] = {}
        self._folders: dict[str, Path] = {}

    def _real(self, path: Path) -> Path:
        """`path.resolve()`, each folder resolved once: scanning lm-eval's catalog resolves about 40,000
        paths in a few thousand folders, and `resolve` walks every component of each (3.5 s of 8)."""
        if os.path.islink(path):
            return path.resolve()
        folder = str(path.parent)
        if folder not in self._folders:
            self._folders[folder] = path.parent.resolve()
        return self._folders[folder] / path.name

    def _read(self, path: Path) -> tuple[dict[str, Any], str]:
        if path not in self._files:
            value, raw = read_yaml(path)
            self._files[path] = (value, hashlib.sha256(raw).hexdigest())
        value, digest = self._files[path]
        return dict(value), digest

    def load(self, path: Path) -> LoadedYaml:
        """lm-eval's `load_yaml(path, resolve_func=False)`: includes merged, local keys winning."""
        path = self._real(path.expanduser().absolute())
        chain: list[tuple[Path, str]] = []
        config = self._merge(path, (), chain)
        root = path.parent
        digest = hashlib.sha256()
        for file, file_hash in chain:
            name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
            digest.update(f"{name}\0{file_hash}\n".encode())
        return LoadedYaml(path, config, [p for p, _ in chain], digest.hexdigest())

    def _merge(self, path: Path, stack: tuple[Path, ...], chain: list[tuple[Path, str]]) -> dict[str, Any]:
        config, file_hash = self._read(path)
        chain.append((path, file_hash))
        if "include" not in config:
            return config
        includes = config.pop("include")
        merged: dict[str, Any] = {}
        for inc in includes if isinstance(includes, list) else [includes]:
            if not isinstance(inc, str):
                raise YamlRefusal(path, "include", f"expected a file name, got {inc!r}")
            inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
            inc_path = self._real(inc_path)
            if inc_path in stack or inc_path == path:
                raise YamlRefusal(path, "include", f"include loop through {inc}")
            if not inc_path.is_file():
                raise YamlRefusal(path, "include", f"included file {inc} does not exist")
            included = self._merge(inc_path, (*stack, path), chain)
            included.pop("task_list", None)  # lm-eval: task_list belongs to the included file only
            merged.update(included)
        merged.update(config)
        return merged
