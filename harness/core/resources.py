"""Where the package's data lives: templates, static files, suites, fixtures, the sandbox's Dockerfile.

They are package data (harness.reports, harness.suites, harness.tasks, harness.sandbox), found with
importlib.resources, so a wheel installed anywhere finds them as a checkout does. harness is always
installed as a directory (never zipped), so the resource root is a real path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_dir(package: str) -> Path:
    """The directory of an installed package of ours, e.g. package_dir("harness.reports") / "templates"."""
    return Path(str(files(package)))
