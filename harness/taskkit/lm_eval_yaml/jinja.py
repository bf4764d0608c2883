"""lm-eval's prompt fields: a column name, a Jinja template, or a literal, resolved per document.

`ENV` is `lm_eval/utils.py:env` (StrictUndefined, keep_trailing_newline, the `regex_replace`
filter, no loader) and `render` is `utils.apply_template`. `Field.text / target / choices`
reproduce `ConfigurableTask.doc_to_text / doc_to_target / doc_to_choice` (0.4.13) for the
string, int and list forms, including their `ast.literal_eval` of the rendered text:

- doc_to_text: a column name (of the evaluation split's features) gives the column; else the
  rendered template, as an int when it is all digits and the task has `doc_to_choice`;
- doc_to_target: the same, and a rendered "[...]" is literal_eval'd (left a string if that fails);
- doc_to_choice: a column, a list, a dict's values, or literal_eval of the rendered template.

A template that names a field the document lacks fails (StrictUndefined): `FieldError` says
which field, and the caller names the file and key.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

from harness.core.errors import UsageError


def regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm_eval/utils.py:regex_replace, the one custom Jinja filter."""
    return re.sub(pattern, repl, string, count=count)


ENV = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
ENV.filters["regex_replace"] = regex_replace


class FieldError(UsageError):
    """A template that failed on a document (a missing field, a bad expression)."""


@lru_cache(maxsize=4096)
def _compiled(template: str) -> jinja2.Template:
    return ENV.from_string(template)


@lru_cache(maxsize=16384)
def check_syntax(template: str) -> str | None:
    """None when the template parses, else the error (done when the config is read, before any data)."""
    try:
        ENV.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return f"Jinja syntax error at line {exc.lineno}: {exc.message}"
    return None


def render(template: str, doc: dict) -> str:
    """lm_eval/utils.py:apply_template: `env.from_string(template).render(**doc)`."""
    try:
        return _compiled(template).render(**doc)
    except jinja2.UndefinedError as exc:
        raise FieldError(f"template {template!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise FieldError(f"template {template!r}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise FieldError(f"template {template!r}: {type(exc).__name__}: {exc}") from None


def literal(text: str) -> Any:
    """`ast.literal_eval`, a FieldError (not a crash) when the text is no literal."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise FieldError(f"rendered {text[:60]!r} is not a Python literal ({type(exc).__name__})") from None


DocFn = Callable[[dict], Any]


@dataclass(frozen=True)
class Field:
    """One prompt field of a config: a string (column or template), an int, a list, a dict or a ported function.

    `features` are the evaluation split's column names (lm-eval's `self.features`); `has_choices`
    is whether the task sets `doc_to_choice` (it decides the digit rule of text and target).
    """

    value: Any
    features: frozenset[str] = frozenset()
    has_choices: bool = False

    def with_features(self, features: Iterable[str]) -> Field:
        return Field(self.value, frozenset(features), self.has_choices)

    def text(self, doc: dict) -> Any:
        value = self.value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value in self.features:
                return doc[value]
            rendered = render(value, doc)
            return literal(rendered) if rendered.isdigit() and self.has_choices else rendered
        if callable(value):
            return value(doc)
        raise FieldError(f"unsupported doc_to_text value {value!r}")

    def target(self, doc: dict) -> Any:
        value = self.value
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value in self.features:
                return doc[value]
            rendered = render(value, doc)
            if rendered.isdigit() and self.has_choices:
                return literal(rendered)
            if len(rendered) >= 2 and rendered[0] == "[" and rendered[-1] == "]":
                try:
                    return ast.literal_eval(rendered)
                except (SyntaxError, ValueError):
                    return rendered
            return rendered
        if callable(value):
            return value(doc)
        raise FieldError(f"unsupported doc_to_target value {value!r}")

    def choices(self, doc: dict) -> list:
        value = self.value
        if isinstance(value, str):
            if value in self.features:
                return doc[value]
            return literal(render(value, doc))
        if isinstance(value, list):
            return value
        if isinstance(value, dict):
            return list(value.values())
        if callable(value):
            return value(doc)
        raise FieldError(f"unsupported doc_to_choice value {value!r}")


def resolve_field(doc: dict, value: str | None) -> str | None:
    """`Task.resolve_field`: a key of the document, else a template rendered on it (description, gen_prefix)."""
    if value:
        return doc[value] if value in doc else render(value, doc)
    return None
