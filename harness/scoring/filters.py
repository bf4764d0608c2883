"""Answer extraction and exact match, reproducing lm-evaluation-harness 0.4.13.

- `regex_filter` is `lm_eval/filters/extraction.py:RegexFilter`, `take_first` is
  `lm_eval/filters/selection.py:TakeFirstFilter`; a `FilterPipeline` is one named entry of a
  task's `filter_list` (gsm8k: `strict-match`, `flexible-extract`).
- `exact_match` is `lm_eval/api/metrics.py:exact_match_hf_evaluate` for one prediction.
- `StepPipeline` runs any of lm-eval's registry filters (regex, take_first, take_first_k,
  majority_vote, remove_whitespace, lowercase, uppercase, map, multi_choice_regex) in order,
  one document at a time, for YAML tasks (harness.taskkit.lm_eval_yaml).
- `truncate_at_stop` is `lm_eval/models/utils.py:postprocess_generated_text` (without the
  thinking-token part): lm-eval's model classes cut generations at the first stop sequence
  before any filter sees them.

Deliberate difference: lm-eval lower-cases through numpy. numpy >= 2 maps U+0130 (capital I
with dot) to a plain "i" while `str.lower` gives "i" + combining dot; we use `str.lower`, so
the two differ on that one code point only. numpy's habit of dropping trailing NUL characters
from strings is reproduced.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FALLBACK = "[invalid]"


def regex_filter(responses: Sequence[object], pattern: str, group_select: int = 0, fallback: str = FALLBACK) -> list[str]:
    """Each response -> its `group_select`-th regex match (first non-empty group of a tuple), stripped."""
    regex = re.compile(pattern)
    out: list[str] = []
    for resp in responses:
        text = resp if isinstance(resp, str) else ""
        matches = regex.findall(text)
        if not matches:
            out.append(fallback)
            continue
        match = matches[group_select]
        if isinstance(match, tuple):
            groups = [m for m in match if m]
            match = groups[0] if groups else fallback
        out.append(match.strip())
    return out


def take_first(responses: Sequence[str]) -> str:
    return responses[0]


@dataclass(frozen=True)
class FilterPipeline:
    """One lm-eval filter ensemble of the form `regex` then `take_first`."""

    name: str
    pattern: str
    group_select: int = 0
    fallback: str = FALLBACK

    def apply(self, responses: Sequence[object]) -> str:
        return take_first(regex_filter(responses, self.pattern, self.group_select, self.fallback))


@dataclass(frozen=True)
class ExactMatchOptions:
    """The keyword arguments a task's `metric_list` passes to lm-eval's exact_match."""

    regexes_to_ignore: tuple[str, ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False


_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DIGITS = str.maketrans("", "", string.digits)


def _normalise(text: str, options: ExactMatchOptions) -> str:
    for pattern in options.regexes_to_ignore:
        text = re.sub(pattern, "", text)
    text = text.rstrip("\x00")  # numpy unicode arrays drop trailing NULs
    if options.ignore_case:
        text = text.lower()
    if options.ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    if options.ignore_numbers:
        text = text.translate(_DIGITS)
    return text.rstrip("\x00")


def exact_match(prediction: str, reference: str, options: ExactMatchOptions = ExactMatchOptions()) -> float:
    """1.0 when prediction and reference are equal after lm-eval's normalisations, else 0.0."""
    return 1.0 if _normalise(prediction, options) == _normalise(reference, options) else 0.0


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut at every stop sequence in turn, as lm-eval's model classes do (idempotent)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


# --- lm-eval's filter registry, step by step (for YAML tasks' `filter_list`) --------------------
#
# Each step maps one document's responses as lm-eval's filter classes map `inst.resps`:
# extraction.py (regex, remove_whitespace, multi_choice_regex), selection.py (take_first,
# take_first_k, majority_vote), transformation.py (lowercase, uppercase, map).

FILTER_ARGS: dict[str, frozenset[str]] = {
    "regex": frozenset({"regex_pattern", "group_select", "fallback"}),
    "take_first": frozenset(),
    "take_first_k": frozenset({"k"}),
    "majority_vote": frozenset(),
    "remove_whitespace": frozenset(),
    "lowercase": frozenset(),
    "uppercase": frozenset(),
    "map": frozenset({"mapping_dict", "default_value"}),
    "multi_choice_regex": frozenset({"regex_pattern", "group_select", "fallback", "ignore_case",
                                     "ignore_punctuation", "regexes_to_ignore"}),
}
_REQUIRED_ARGS = {"take_first_k": frozenset({"k"})}
_GSM8K_PATTERN = r"#### (\-?[0-9\.\,]+)"  # RegexFilter's default pattern


def check_filter(function: str, kwargs: dict) -> str | None:
    """None when lm-eval's registry has `function` and it accepts `kwargs`, else the reason."""
    if function not in FILTER_ARGS:
        return f"unknown filter {function!r} (supported: {', '.join(sorted(FILTER_ARGS))})"
    extra = set(kwargs) - FILTER_ARGS[function]
    if extra:
        return f"filter {function} has no argument {', '.join(sorted(extra))}"
    missing = _REQUIRED_ARGS.get(function, frozenset()) - set(kwargs)
    if missing:
        return f"filter {function} needs {', '.join(sorted(missing))}"
    return None


def _multi_choice_find(regex: re.Pattern, resp: object, group_select: int, convert: dict[str, str]) -> str:
    text = resp if isinstance(resp, str) else ""
    matches = regex.findall(text)
    if not matches:
        return ""
    match = matches[group_select]
    if isinstance(match, tuple):
        non_empty = [m for m in match if m]
        if not non_empty:
            return ""
        match = non_empty[0]
    match = match.strip()
    return convert.get(match, match) if match else match


_UNICODE_PUNCTUATION: dict[int, None] | None = None


def _punctuation_table() -> dict[int, None]:
    import sys
    import unicodedata

    global _UNICODE_PUNCTUATION
    if _UNICODE_PUNCTUATION is None:
        _UNICODE_PUNCTUATION = dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))
    return _UNICODE_PUNCTUATION


def multi_choice_regex(responses: Sequence[object], doc: dict, kwargs: dict) -> list[str]:
    """lm_eval/filters/extraction.py:MultiChoiceRegexFilter for one document (needs doc["choices"])."""
    regex = re.compile(kwargs.get("regex_pattern", _GSM8K_PATTERN))
    group_select, fallback = kwargs.get("group_select", 0), kwargs.get("fallback", FALLBACK)

    def ignores(text: str) -> str:
        for pattern in kwargs.get("regexes_to_ignore") or ():
            text = re.sub(pattern, "", text)
        if kwargs.get("ignore_case"):
            text = text.lower()
        if kwargs.get("ignore_punctuation"):
            text = text.translate(_punctuation_table())
        return text

    to_alpha: dict[str, str] = {}
    branches, letters = [], []
    for i, choice in enumerate(doc["choices"]):
        letter = chr(ord("A") + i)
        key = ignores(choice.strip())
        branches.append(re.escape(key))
        to_alpha[key] = f"({letter})"
        letters.append(letter)
    fallback_regex = re.compile("|".join(sorted(branches, key=len, reverse=True)))
    letter_regex = re.compile(rf":[\s]*({'|'.join(letters)})")
    letter_to_target = {letter: f"({letter})" for letter in letters}
    out = []
    for resp in responses:
        match = _multi_choice_find(regex, resp, group_select, {})
        if not match:
            match = _multi_choice_find(fallback_regex, ignores(resp if isinstance(resp, str) else ""), group_select, to_alpha)
            if not match:
                match = _multi_choice_find(letter_regex, resp, group_select, letter_to_target)
        out.append(match or fallback)
    return out


def apply_filter(function: str, kwargs: dict, value: Any, doc: dict) -> Any:
    """One lm-eval filter step over one document's (already filtered) responses."""
    if function == "regex":
        return regex_filter(value, kwargs.get("regex_pattern", _GSM8K_PATTERN), kwargs.get("group_select", 0),
                            kwargs.get("fallback", FALLBACK))
    if function == "take_first":
        return value[0]
    if function == "take_first_k":
        k = kwargs["k"]
        if len(value) < k:
            raise ValueError(f"take_first_k needs {k} responses per document, got {len(value)} (raise repeats)")
        return value[:k]
    if function == "majority_vote":
        return [Counter(value).most_common(1)[0][0]]
    if function == "remove_whitespace":
        return [r.strip() for r in value]
    if function == "lowercase":
        return [r.lower() for r in value]
    if function == "uppercase":
        return [r.upper() for r in value]
    if function == "map":
        mapping = kwargs.get("mapping_dict") or {}
        return [mapping.get(r, kwargs.get("default_value")) for r in value]
    if function == "multi_choice_regex":
        return multi_choice_regex(value, doc, kwargs)
    raise ValueError(f"unknown filter {function!r}")


@dataclass(frozen=True)
class StepPipeline:
    """One named entry of a YAML `filter_list`: (function, kwargs) steps applied in order."""

    name: str
    steps: tuple[tuple[str, dict], ...]

    def apply(self, responses: Sequence[object], doc: dict | None = None) -> Any:
        value: Any = list(responses)
        for function, kwargs in self.steps:
            value = apply_filter(function, kwargs, value, doc or {})
        return value
