"""The report's templates and static assets (package data in harness.reports), and the one jinja2
environment every page renders with: autoescaping on, undefined names an error."""

from __future__ import annotations

from functools import lru_cache

import jinja2
from markupsafe import Markup

from harness.core.resources import package_dir

REPORTS_DIR = package_dir("harness.reports")
TEMPLATES = REPORTS_DIR / "templates"
STATIC = REPORTS_DIR / "static"
ASSETS = ("report.css", "report.js")


@lru_cache(maxsize=1)
def env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def inline_assets() -> dict[str, Markup]:
    # Trusted files of this package; '</' cannot occur in them, so they are safe inside <style>/<script>.
    css, js = ((STATIC / name).read_text() for name in ASSETS)
    if "</" in css or "</" in js:
        raise RuntimeError("report assets must not contain '</'")
    return {"css": Markup(css), "js": Markup(js)}
