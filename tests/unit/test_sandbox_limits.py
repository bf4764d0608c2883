"""Limits checks every field when it is made: out of bounds is a UsageError naming the field and its range."""

from __future__ import annotations

import dataclasses
import math

import pytest

from harness.core.errors import UsageError
from harness.sandbox import Limits
from harness.sandbox.base import LIMIT_BOUNDS, LimitError, rlimits

FIELDS = [f.name for f in dataclasses.fields(Limits)]
INTEGER = [name for name in FIELDS if LIMIT_BOUNDS[name].integer]
FLOAT = [name for name in FIELDS if not LIMIT_BOUNDS[name].integer]


def _step(name: str) -> float:
    return 1 if LIMIT_BOUNDS[name].integer else 0.001


def _bad_values() -> list:
    """(field, value) pairs that must be refused: below and above the bounds, zero, negative, and for the
    float fields NaN and +-inf; for the integer fields a fraction, a bool and a string."""
    cases = []
    for name in FIELDS:
        bound = LIMIT_BOUNDS[name]
        below = bound.low if bound.low_open else bound.low - _step(name)
        cases += [(name, below), (name, bound.high + _step(name)), (name, 0), (name, -1), (name, -bound.high)]
        if bound.integer:
            cases += [(name, bound.low + 0.5), (name, True), (name, str(int(bound.low)))]
        else:
            cases += [(name, math.nan), (name, math.inf), (name, -math.inf), (name, "1")]
    return [pytest.param(name, value, id=f"{name}={value!r}") for name, value in cases]


def _edge_values() -> list:
    cases = []
    for name in FIELDS:
        bound = LIMIT_BOUNDS[name]
        low = bound.low + (0.001 if bound.low_open else 0)
        cases += [(name, low), (name, bound.high)]
    return [pytest.param(name, value, id=f"{name}={value!r}") for name, value in cases]


def test_every_field_has_a_bound() -> None:
    assert set(LIMIT_BOUNDS) == set(FIELDS)


def test_defaults_are_accepted() -> None:
    limits = Limits()
    for name in FIELDS:
        bound = LIMIT_BOUNDS[name]
        assert bound.low <= getattr(limits, name) <= bound.high


@pytest.mark.parametrize(("name", "value"), _bad_values())
def test_out_of_bounds_is_a_usage_error_naming_field_and_range(name: str, value) -> None:
    with pytest.raises(UsageError) as caught:
        Limits(**{name: value})
    exc = caught.value
    assert isinstance(exc, LimitError) and exc.field == name
    message = str(exc)
    assert "\n" not in message
    assert name in message and exc.allowed in message
    high = LIMIT_BOUNDS[name].high
    assert (str(int(high)) if float(high).is_integer() else str(high)) in message  # the range, not just the name


@pytest.mark.parametrize(("name", "value"), _edge_values())
def test_edge_values_are_accepted(name: str, value) -> None:
    assert getattr(Limits(**{name: value}), name) == value


@pytest.mark.parametrize("name", FIELDS)
def test_replace_is_checked_too(name: str) -> None:
    with pytest.raises(LimitError):
        dataclasses.replace(Limits(), **{name: -1})


def test_values_are_stored_as_plain_numbers() -> None:
    class Count:  # an integer-like value (numpy.int64 and the like): stored as a plain int
        def __index__(self) -> int:
            return 256

    limits = Limits(timeout_s=5, memory_mb=Count(), cpus=1)
    assert type(limits.timeout_s) is float and type(limits.cpus) is float and type(limits.memory_mb) is int
    assert rlimits(limits, None)["as"] == 256 * 1024 * 1024


@pytest.mark.parametrize(("name", "value"), [("memory_mb", -5), ("memory_mb", 0), ("tmp_mb", 0), ("pids", -1)])
def test_the_values_that_switched_limits_off_are_refused(name: str, value: int) -> None:
    # -5 MiB wrapped RLIMIT_AS to unlimited under bwrap, 0 gave a SIGSEGV verdict, tmpfs size 0 is unlimited,
    # a pids limit reaching 0 is no RLIMIT_NPROC at all.
    with pytest.raises(LimitError, match=rf"^sandbox limit {name} must be an integer from "):
        Limits(**{name: value})
