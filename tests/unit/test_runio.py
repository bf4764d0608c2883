"""Export and import of a run: the manifest carries each file's sha256 and rows; import refuses any mismatch
and then leaves the target database byte-identical (or absent, if it did not exist)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from harness.core.errors import UsageError
from harness.store.db import MetricRow, SampleRow, Store
from harness.store.migrations import SCHEMA_VERSION
from harness.store.runio import FORMAT_VERSION, MANIFEST, TABLES, export_run, import_run
from tests.conftest import harness_cli

RUN = "20260101-000000-aaaaaa"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _add_run(store: Store, run_id: str, n: int = 5) -> None:
    store.create_run(run_id, f"cfg-{run_id}", {"model": "hf:x", "model_fingerprint": "f" * 64, "backend": "hf",
                                               "backend_args": {"dtype": "float32"}, "tasks": ["t"], "seed": 1,
                                               "metadata": {"python": "3.12"}}, ["base", "ünï"])
    store.record_task(run_id, {"task": "t", "version": "1", "num_fewshot": 0, "source": "fixture:t",
                               "fingerprint": "d" * 64, "n_docs": n, "prompts_hash": "p" * 64})
    store.insert_samples(run_id, [
        SampleRow("t", i, f"doc-{i}", f"prompt-{i}", "tgt", f"Question {i}? ü", "A", [[-1.5, True]], "A",
                  {"acc": float(i % 2)}, [-1.5, -2.0 - i]) for i in range(n)])
    store.write_metrics(run_id, [MetricRow("t", "acc", 0.4, 0.2, 0.0, 0.8, n)])
    store.set_status(run_id, "complete", {"python": "3.12"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    store = Store(tmp / "source.duckdb")
    _add_run(store, RUN)
    _add_run(store, "another-run", n=3)
    export_run(store, RUN, tmp / "export")
    store.close()
    return tmp / "export"


@pytest.fixture
def export_dir(exported, tmp_path) -> Path:
    """A private copy of the export, free to tamper with."""
    return Path(shutil.copytree(exported, tmp_path / "export"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _old_format(folder: Path) -> None:
    """What exports looked like before format 2: no format_version, no sha256."""
    manifest = _manifest(folder)
    del manifest["format_version"], manifest["sha256"]
    _write_manifest(folder, manifest)


def _rewrite(folder: Path, table: str, select: str, rehash: bool = False) -> None:
    """Replace DIR/table.parquet with `select` over its rows (FROM t); with rehash the manifest is made to agree."""
    path = folder / f"{table}.parquet"
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{path}')")
    con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
    con.close()
    if rehash:
        manifest = _manifest(folder)
        manifest["tables"][table] = rows
        if "sha256" in manifest:
            manifest["sha256"][table] = _sha256(path)
        _write_manifest(folder, manifest)


def _dump(db: Path, run_id: str) -> dict[str, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY ALL", [run_id]).fetchall() for t in TABLES}
    finally:
        con.close()


def _state(folder: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


# ---- round trips ---------------------------------------------------------------------------------

def test_manifest_has_format_hashes_and_rows(exported):
    manifest = _manifest(exported)
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["run_id"] == RUN and manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["tables"] == {"runs": 1, "run_tags": 2, "run_tasks": 1, "samples": 5, "metrics": 1}
    assert manifest["sha256"] == {t: _sha256(exported / f"{t}.parquet") for t in TABLES}


def test_round_trip(exported, tmp_path):
    target = tmp_path / "target.duckdb"
    store = Store(target)
    _add_run(store, "already-here", n=2)
    assert import_run(store, exported) == RUN
    store.close()
    assert _dump(target, RUN) == _dump(exported.parent / "source.duckdb", RUN)
    assert len(_dump(target, "already-here")["samples"]) == 2


@pytest.mark.slow  # the CLI as a subprocess
def test_round_trip_through_the_cli(exported, tmp_path):
    source = exported.parent / "source.duckdb"
    out = tmp_path / "cli-export"
    result = harness_cli("export", RUN[:10], "--parquet", str(out), "--db", str(source))  # a unique prefix
    assert result.returncode == 0, result.stderr
    assert f"exported run {RUN} " in result.stdout
    assert _manifest(out)["sha256"] == {t: _sha256(out / f"{t}.parquet") for t in TABLES}
    target = tmp_path / "new" / "t.duckdb"
    result = harness_cli("import", str(out), "--db", str(target))
    assert result.returncode == 0, result.stderr
    assert _dump(target, RUN) == _dump(source, RUN)
    before = _sha256(target)
    again = harness_cli("import", str(out), "--db", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert _sha256(target) == before


@pytest.mark.slow  # the CLI as a subprocess
def test_old_format_export_still_imports(exported, export_dir, tmp_path):
    _old_format(export_dir)
    assert set(_manifest(export_dir)) == {"run_id", "schema_version", "tables"}
    target = tmp_path / "old.duckdb"
    result = harness_cli("import", str(export_dir), "--db", str(target))
    assert result.returncode == 0, result.stderr
    assert _dump(target, RUN) == _dump(exported.parent / "source.duckdb", RUN)


# ---- tampering -----------------------------------------------------------------------------------

def changed_file(d: Path) -> None:  # same rows, other values
    _rewrite(d, "metrics", "SELECT * REPLACE (value + 0.5 AS value) FROM t")


def changed_byte(d: Path) -> None:
    path = d / "samples.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncated_file(d: Path) -> None:
    path = d / "samples.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty_file(d: Path) -> None:
    (d / "runs.parquet").write_bytes(b"")


def missing_file(d: Path) -> None:
    (d / "run_tags.parquet").unlink()


def extra_rows(d: Path) -> None:
    _rewrite(d, "metrics", "SELECT * FROM t UNION ALL SELECT * REPLACE ('acc_norm' AS metric) FROM t")


def fewer_rows(d: Path) -> None:
    _rewrite(d, "samples", "SELECT * FROM t WHERE doc_id < 2")


def manifest_run_id_edited(d: Path) -> None:
    manifest = _manifest(d)
    manifest["run_id"] = "another-run"
    _write_manifest(d, manifest)


def manifest_rows_edited(d: Path) -> None:
    manifest = _manifest(d)
    manifest["tables"]["samples"] += 1
    _write_manifest(d, manifest)


def manifest_hash_edited(d: Path) -> None:
    manifest = _manifest(d)
    manifest["sha256"]["run_tasks"] = "0" * 64
    _write_manifest(d, manifest)


def manifest_without_hashes_in_format_2(d: Path) -> None:
    manifest = _manifest(d)
    del manifest["sha256"]
    _write_manifest(d, manifest)


def manifest_missing_a_table(d: Path) -> None:
    manifest = _manifest(d)
    del manifest["tables"]["metrics"], manifest["sha256"]["metrics"]
    _write_manifest(d, manifest)


def newer_format(d: Path) -> None:
    manifest = _manifest(d)
    manifest["format_version"] = FORMAT_VERSION + 1
    _write_manifest(d, manifest)


def newer_schema(d: Path) -> None:
    manifest = _manifest(d)
    manifest["schema_version"] = SCHEMA_VERSION + 1
    _write_manifest(d, manifest)


def manifest_not_json(d: Path) -> None:
    (d / MANIFEST).write_text('{"run_id": ')


def manifest_missing(d: Path) -> None:
    (d / MANIFEST).unlink()


def rows_of_another_run_rehashed(d: Path) -> None:
    """The manifest agrees with the files (hashes and rows updated), but the rows are another run's."""
    _rewrite(d, "samples", "SELECT * REPLACE ('another-run' AS run_id) FROM t", rehash=True)


def duplicate_rows_rehashed(d: Path) -> None:
    """Consistent manifest, but the file breaks the table's primary key: the trial import catches it."""
    _rewrite(d, "samples", "SELECT * FROM t UNION ALL SELECT * FROM t WHERE doc_id = 0", rehash=True)


def other_columns_rehashed(d: Path) -> None:
    _rewrite(d, "run_tags", "SELECT run_id, tag, 1 AS surprise FROM t", rehash=True)


def no_runs_row_rehashed(d: Path) -> None:
    _rewrite(d, "runs", "SELECT * FROM t WHERE false", rehash=True)


# each with words its one-line error must hold
TAMPERING: dict[str, tuple[Callable[[Path], None], str]] = {f.__name__: (f, words) for f, words in (
    (changed_file, "does not match the manifest"),
    (changed_byte, "does not match the manifest"),
    (truncated_file, "does not match the manifest"),
    (empty_file, "does not match the manifest"),
    (missing_file, "missing run_tags.parquet"),
    (extra_rows, "does not match the manifest"),
    (fewer_rows, "does not match the manifest"),
    (manifest_run_id_edited, "rows of another run"),
    (manifest_rows_edited, "holds 5 rows, the manifest says 6"),
    (manifest_hash_edited, "does not match the manifest"),
    (manifest_without_hashes_in_format_2, "needs sha256"),
    (manifest_missing_a_table, "malformed manifest"),
    (newer_format, f"format {FORMAT_VERSION + 1}"),
    (newer_schema, f"schema version {SCHEMA_VERSION + 1}"),
    (manifest_not_json, "malformed manifest"),
    (manifest_missing, "not an exported run"),
    (rows_of_another_run_rehashed, "rows of another run"),
    (duplicate_rows_rehashed, "does not fit table samples"),
    (other_columns_rehashed, "does not fit table run_tags"),
    (no_runs_row_rehashed, "one run"),
)}
# what an old-format export (no hashes) still catches: everything but a same-size rewrite of values
OLD_FORMAT_CAUGHT = {"truncated_file": "cannot read", "empty_file": "cannot read", "missing_file": "missing",
                     "extra_rows": "metrics.parquet holds 2 rows, the manifest says 1", "fewer_rows": "holds 2 rows",
                     "manifest_run_id_edited": "rows of another run", "manifest_rows_edited": "the manifest says 6",
                     "rows_of_another_run_rehashed": "rows of another run", "duplicate_rows_rehashed": "does not fit",
                     "newer_schema": "schema version", "no_runs_row_rehashed": "one run"}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampered_export_is_refused_by_the_store(export_dir, tmp_path, kind):
    tamper, words = TAMPERING[kind]
    tamper(export_dir)
    target = tmp_path / "target.duckdb"
    store = Store(target)
    _add_run(store, "already-here", n=2)
    with pytest.raises(UsageError) as exc:
        import_run(store, export_dir)
    assert words in str(exc.value) and "\n" not in str(exc.value)
    assert store.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert store.con.execute("SELECT count(*) FROM samples WHERE run_id <> 'already-here'").fetchone()[0] == 0
    store.close()


@pytest.mark.slow  # the CLI as a subprocess
@pytest.mark.parametrize("target_exists", [False, True], ids=["new-db", "existing-db"])
@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampered_export_is_refused_by_the_cli(export_dir, tmp_path, kind, target_exists):
    tamper, words = TAMPERING[kind]
    tamper(export_dir)
    folder = tmp_path / "db"
    folder.mkdir()
    target = folder / "target.duckdb"
    if target_exists:
        store = Store(target)
        _add_run(store, "already-here", n=2)
        store.close()
    before = _state(folder)
    result = harness_cli("import", str(export_dir), "--db", str(target))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and words in lines[0], result.stderr
    assert _state(folder) == before  # byte-identical, or still absent (and no .wal)
    assert target.exists() == target_exists


@pytest.mark.parametrize("kind", sorted(OLD_FORMAT_CAUGHT))
def test_old_format_checks_rows_and_runs(export_dir, tmp_path, kind):
    _old_format(export_dir)
    TAMPERING[kind][0](export_dir)
    target = tmp_path / "target.duckdb"
    store = Store(target)
    with pytest.raises(UsageError, match=OLD_FORMAT_CAUGHT[kind]):
        import_run(store, export_dir)
    assert store.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    store.close()


def test_old_format_with_hashes_left_in_still_checks_them(export_dir, tmp_path):
    """A manifest that lost only format_version is read as format 1, but the hashes it has are still checked."""
    manifest = _manifest(export_dir)
    del manifest["format_version"]
    _write_manifest(export_dir, manifest)
    changed_file(export_dir)
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(UsageError, match="does not match the manifest"):
        import_run(store, export_dir)
    store.close()


def test_export_over_an_old_export_replaces_its_manifest(exported, tmp_path):
    out = Path(shutil.copytree(exported, tmp_path / "again"))
    store = Store(exported.parent / "source.duckdb", read_only=True)
    export_run(store, "another-run", out)
    store.close()
    manifest = _manifest(out)
    assert manifest["run_id"] == "another-run" and manifest["tables"]["samples"] == 3
    assert manifest["sha256"] == {t: _sha256(out / f"{t}.parquet") for t in TABLES}
