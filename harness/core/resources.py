"""Where the package's data lives: templates, static files, suites, fixtures, the sandbox's Dockerfile.

They are package data (harness.reports, harness.suites, harness.tasks, harness.sandbox), found with
importlib.resources, so a wheel installed anywhere finds them as a checkout does. harness is always
installed as a directory (never zipped), so the resource root is a real path.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from harness.core.errors import UsageError


def package_dir(package: str) -> Path:
    """The directory of an installed package of ours, e.g. package_dir("harness.reports") / "templates"."""
    return Path(str(files(package)))


def named_yaml(name_or_path: str, folder: Path, kind: str, known: Callable[[], list[str]],
               accept: Callable[[Path], bool] = lambda path: True, hint: str = "") -> Path:
    """A YAML file given as a path (anything ending .yaml/.yml, or that exists) or by name in `folder`
    (a suite, a recipe); an unknown name is one UsageError listing the known ones."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UsageError(f"{kind} file not found: {path}")
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file() or not accept(candidate):
        raise UsageError(f"unknown {kind}: {name_or_path} (known: {', '.join(known())}{hint})")
    return candidate


def first_validation_error(exc: Exception, top: str) -> str:
    """The first error of a pydantic ValidationError as `where: message` (`top` when it is at the top level)."""
    err = exc.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(x) for x in err["loc"]) or top
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"
