"""harness: evaluate language models, keep every number in DuckDB."""

__version__ = "0.1.0"
