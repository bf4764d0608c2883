"""Reading a user's text file (a suite, a gate policy, an answers file): any reason it cannot be
read is an input error with one line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UsageError


def decode_text(data: bytes, path: Path | str, what: str = "file") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; missing, a directory, unreadable or not UTF-8 -> UsageError."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    return decode_text(data, path, what)


def read_yaml(path: Path, what: str = "file") -> object:
    """The parsed YAML of `path` (a suite, a recipe); unreadable or malformed -> one UsageError line
    naming the file and, where YAML knows it, the line."""
    import yaml

    try:
        return yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"malformed {what} {path}{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}") from None
