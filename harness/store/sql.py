"""Small helpers over a DuckDB connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> Any:
    """The first column of the first row of a query that always returns a row (count, max, ...)."""
    row = con.execute(sql, list(params)).fetchone()
    assert row is not None, f"no row from {sql!r}"
    return row[0]
