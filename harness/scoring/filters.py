"""Answer extraction and exact match, reproducing lm-evaluation-harness 0.4.13.

- `regex_filter` is `lm_eval/filters/extraction.py:RegexFilter`, `take_first` is
  `lm_eval/filters/selection.py:TakeFirstFilter`; a `FilterPipeline` is one named entry of a
  task's `filter_list` (gsm8k: `strict-match`, `flexible-extract`).
- `exact_match` is `lm_eval/api/metrics.py:exact_match_hf_evaluate` for one prediction.
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
from collections.abc import Sequence
from dataclasses import dataclass

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
