"""Content fingerprints of model files, memoised so a repeated run does not re-hash gigabytes.

The memo lives in `$HARNESS_CACHE_DIR/fingerprints.json`, keyed by absolute path and validated by
size and mtime_ns: a file rewritten in place gets a new mtime and is hashed again. Two processes
may update the memo at once; each writes a temp file and `os.replace`s it, so the file is always
whole JSON (one writer's additions may be lost, which only costs a re-hash later).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.hashing import sha256_file, sha256_json

MEMO_NAME = "fingerprints.json"

# What decides a checkpoint's answers: its weights, its config and its tokenizer.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
CONFIG_AND_TOKENIZER_FILES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
    "adapter_config.json",  # a peft adapter's rank, alpha and targets (its weights are *.safetensors)
})

_memo_in_process: dict[str, dict] = {}


def cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else ~/.cache/harness (created on demand by writers)."""
    configured = os.environ.get("HARNESS_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "harness"


def _memo_path() -> Path:
    return cache_dir() / MEMO_NAME


def _read_memo(path: Path) -> dict[str, dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}  # missing or unreadable memo: it is only a cache, start afresh
    return data if isinstance(data, dict) else {}


def _write_memo_entry(key: str, entry: dict) -> None:
    path = _memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # re-read just before writing so entries other processes added meanwhile are kept
        memo = _read_memo(path)
        # drop entries of files that are gone (temp copies, old conversions) so the memo stays small
        memo = {k: v for k, v in memo.items() if os.path.exists(k)}
        memo[key] = entry
        fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(memo, handle, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only cache dir costs a re-hash next time, never a failed run


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised by (absolute path, size, mtime_ns)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = str(resolved)
    for memo in (_memo_in_process, _read_memo(_memo_path())):
        entry = memo.get(key)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            _memo_in_process[key] = entry
            return str(entry["sha256"])
    digest = sha256_file(resolved)
    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _memo_in_process[key] = entry
    _write_memo_entry(key, entry)
    return digest


def fingerprinted_files(directory: Path) -> list[Path]:
    """The files of a checkpoint directory that decide its answers (hidden folders skipped)."""
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.name.endswith(WEIGHT_SUFFIXES) or path.name in CONFIG_AND_TOKENIZER_FILES:
            found.append(path)
    return found


def dir_fingerprint(directory: str | Path) -> str:
    """sha256 over (relative name, content hash) of a checkpoint's weights, config and tokenizer."""
    root = Path(directory)
    files = fingerprinted_files(root)
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in files):
        raise UsageError(f"no model weights (*.safetensors, *.bin, *.gguf) in {root}")
    return sha256_json([[f.relative_to(root).as_posix(), file_sha256(f)] for f in files])
