"""Move a run between databases: one parquet file per table plus a small manifest.

Export writes the run's rows of runs, run_tags, run_tasks, samples and metrics with DuckDB's
COPY ... (FORMAT parquet), then DIR/manifest.json: the run id, the schema version, the rows of
each file and (format 2) the sha256 of each file.

Import verifies before it writes anything: each file is copied once into a private temporary
folder while its sha256 is computed, and every check runs on those copies (the hash, the row
count, that every row belongs to the manifest's run, and a trial insert into an in-memory
database at this harness's schema). Only then does it open the target database, refuse a run id
that already exists, and insert every table in one transaction. Exports of format 1 (no hashes)
are still read; their row counts are checked against the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import duckdb

from harness.core.errors import UsageError
from harness.store.db import Store
from harness.store.migrations import SCHEMA_VERSION, migrate
from harness.store.sql import scalar

TABLES = ("runs", "run_tags", "run_tasks", "samples", "metrics")
MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 1: run_id, schema_version, tables (rows); 2: + format_version, sha256
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def export_run(store: Store, run_id: str, out_dir: Path) -> dict[str, int]:
    """Write DIR/<table>.parquet for the run and DIR/manifest.json; returns rows per table."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)  # a half-written export never carries an old manifest
    except OSError as exc:
        raise UsageError(f"cannot write to {out_dir}: {exc.strerror}") from None
    counts: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for table in TABLES:
        target = out_dir / f"{table}.parquet"
        store.con.execute(f"COPY (SELECT * FROM {table} WHERE run_id = {_quote(run_id)}) TO {_quote(str(target))} "
                          "(FORMAT parquet)")
        counts[table] = int(scalar(store.con, "SELECT count(*) FROM read_parquet(?)", [str(target)]))
        hashes[table] = _sha256(target)
    manifest = {"format_version": FORMAT_VERSION, "run_id": run_id, "schema_version": SCHEMA_VERSION,
                "tables": counts, "sha256": hashes}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return counts


@dataclass(frozen=True)
class VerifiedExport:
    """An export whose files were checked; `files` are the private copies that were checked."""

    source: Path
    run_id: str
    schema_version: int
    format_version: int
    counts: dict[str, int]
    files: dict[str, Path]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Manifest:
    run_id: str
    schema_version: int
    format_version: int
    counts: dict[str, int]
    hashes: dict[str, str] | None


def _read_manifest(in_dir: Path) -> _Manifest:
    path = in_dir / MANIFEST
    if not path.is_file():
        raise UsageError(f"{in_dir} is not an exported run (no {MANIFEST})")

    def malformed(why: str) -> UsageError:
        return UsageError(f"{path}: malformed manifest ({why})")

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise malformed(_first_line(exc)) from None
    if not isinstance(manifest, dict):
        raise malformed("not a JSON object")
    fmt = manifest.get("format_version", 1)
    if not _is_int(fmt) or fmt < 1:
        raise malformed(f"format_version {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise UsageError(f"{in_dir} was exported in format {fmt}; this harness reads up to {FORMAT_VERSION} (upgrade harness)")
    run_id, version, counts = manifest.get("run_id"), manifest.get("schema_version"), manifest.get("tables")
    if not isinstance(run_id, str) or not run_id.strip():
        raise malformed(f"run_id {run_id!r}")
    if not _is_int(version) or version < 1:
        raise malformed(f"schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{in_dir} was exported with schema version {version}; this harness reads up to {SCHEMA_VERSION}")
    if not isinstance(counts, dict) or set(counts) != set(TABLES) or not all(_is_int(n) and n >= 0 for n in counts.values()):
        raise malformed(f"tables must give the rows of each of {', '.join(TABLES)}")
    hashes = manifest.get("sha256")
    if hashes is None and fmt >= 2:
        raise malformed(f"format {fmt} needs sha256")
    if hashes is not None and (not isinstance(hashes, dict) or set(hashes) != set(TABLES)
                               or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes.values())):
        raise malformed(f"sha256 must give the hex digest of each of {', '.join(TABLES)}")
    return _Manifest(run_id, version, fmt, dict(counts), dict(hashes) if hashes is not None else None)


def _copy_hashed(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def _verify(in_dir: Path, work: Path) -> VerifiedExport:
    manifest = _read_manifest(in_dir)
    missing = [t for t in TABLES if not (in_dir / f"{t}.parquet").is_file()]
    if missing:
        raise UsageError(f"{in_dir}: missing {', '.join(t + '.parquet' for t in missing)}")
    if manifest.counts["runs"] != 1:
        raise UsageError(f"{in_dir / MANIFEST}: an export holds one run, the manifest gives {manifest.counts['runs']} runs rows")
    files: dict[str, Path] = {}
    for table in TABLES:
        source, target = in_dir / f"{table}.parquet", work / f"{table}.parquet"
        try:
            digest = _copy_hashed(source, target)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
        if manifest.hashes is not None and digest != manifest.hashes[table]:
            raise UsageError(f"{source} does not match the manifest (sha256 {digest[:12]}…, manifest "
                             f"{manifest.hashes[table][:12]}…): changed or damaged after export")
        files[table] = target
    con = duckdb.connect(":memory:")
    try:
        migrate(con)  # a trial import into an empty database at this harness's schema
        for table in TABLES:
            source, copy = in_dir / f"{table}.parquet", files[table].as_posix()
            try:
                rows = int(scalar(con, "SELECT count(*) FROM read_parquet(?)", [copy]))
                ids = [i for (i,) in con.execute("SELECT DISTINCT run_id FROM read_parquet(?)", [copy]).fetchall()]
            except duckdb.Error as exc:
                raise UsageError(f"cannot read {source}: {_first_line(exc)}") from None
            if rows != manifest.counts[table]:
                raise UsageError(f"{source} holds {rows} rows, the manifest says {manifest.counts[table]}")
            if any(i != manifest.run_id for i in ids):
                others = ", ".join(sorted(repr(i) for i in ids if i != manifest.run_id)[:3])
                raise UsageError(f"{source} holds rows of another run ({others}) than the manifest's {manifest.run_id}")
            try:
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [copy])
            except duckdb.Error as exc:
                raise UsageError(f"{source} does not fit table {table}: {_first_line(exc)}") from None
    finally:
        con.close()
    return VerifiedExport(in_dir, manifest.run_id, manifest.schema_version, manifest.format_version,
                          manifest.counts, files)


@contextlib.contextmanager
def verified_export(in_dir: Path) -> Iterator[VerifiedExport]:
    """Check an export without touching any database; UsageError on any mismatch with its manifest."""
    work = Path(tempfile.mkdtemp(prefix="harness-import-"))
    try:
        yield _verify(in_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_verified(store: Store, export: VerifiedExport) -> str:
    """Insert a verified export in one transaction; returns its run id."""
    run_id = export.run_id
    if scalar(store.con, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
        raise UsageError(f"run {run_id} already exists in {store.path}")
    store.con.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            store.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(export.files[table])])
        store.con.execute("COMMIT")
    except duckdb.Error as exc:
        store.con.execute("ROLLBACK")
        raise UsageError(f"cannot import {export.source}: {_first_line(exc)}") from None
    except BaseException:
        store.con.execute("ROLLBACK")
        raise
    return run_id


def import_run(store: Store, in_dir: Path) -> str:
    """Verify an exported run, then insert it; returns its id."""
    with verified_export(in_dir) as export:
        return import_verified(store, export)
