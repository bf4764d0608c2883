"""A database that is not ours, or is from a newer harness, is refused and left byte-identical."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from harness.core.errors import UsageError
from harness.store import migrations
from harness.store.db import Store
from harness.store.migrations import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import harness_cli


def _duckdb(path: Path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def _ours(path: Path, version: int = SCHEMA_VERSION, *extra: str) -> None:
    """A harness database at `version`, built with duckdb directly."""
    statements = [migrations.VERSION_TABLE]
    for v in range(1, version + 1):
        statements += [*MIGRATIONS[v - 1], f"INSERT INTO schema_version VALUES ({v})"]
    _duckdb(path, *statements, *extra)


def runs_with_other_columns(path: Path) -> None:
    _duckdb(path, "CREATE TABLE runs (id INTEGER, name VARCHAR)", "INSERT INTO runs VALUES (1, 'mine')")


def unrelated_tables(path: Path) -> None:
    _duckdb(path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR)",
            "CREATE TABLE orders (id INTEGER, customer INTEGER, total DOUBLE)",
            "INSERT INTO customers VALUES (1, 'a'), (2, 'b')", "INSERT INTO orders VALUES (1, 1, 9.5)")


def foreign_schema_version(path: Path) -> None:
    """Another program that also keeps a schema_version table (a common name)."""
    _duckdb(path, "CREATE TABLE schema_version (version INTEGER NOT NULL)", "INSERT INTO schema_version VALUES (1)",
            "CREATE TABLE accounts (id INTEGER, email VARCHAR)")


def schema_version_with_other_columns(path: Path) -> None:
    _duckdb(path, "CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMP)",
            "INSERT INTO schema_version VALUES (1, now())")


def empty_schema_version_beside_foreign_tables(path: Path) -> None:
    """What an earlier harness left behind in a foreign file: its schema_version, created outside the migration."""
    _duckdb(path, "CREATE TABLE runs (id INTEGER, name VARCHAR)", "CREATE TABLE schema_version (version INTEGER NOT NULL)")


def schema_version_99(path: Path) -> None:
    _duckdb(path, "CREATE TABLE schema_version (version INTEGER NOT NULL)", "INSERT INTO schema_version VALUES (99)")


def ours_from_a_newer_harness(path: Path) -> None:
    _ours(path, SCHEMA_VERSION, f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1})",
          "CREATE TABLE future_things (x INTEGER)")


def ours_with_a_column_dropped(path: Path) -> None:
    _ours(path, SCHEMA_VERSION, "ALTER TABLE runs DROP COLUMN seed")


def ours_with_a_column_retyped(path: Path) -> None:
    _ours(path, SCHEMA_VERSION, "ALTER TABLE metrics ALTER COLUMN value TYPE VARCHAR")


def ours_with_a_table_missing(path: Path) -> None:
    _ours(path, SCHEMA_VERSION, "DROP TABLE cache")


def ours_with_a_gap_in_versions(path: Path) -> None:
    _ours(path, SCHEMA_VERSION, "DELETE FROM schema_version WHERE version = 1")


def only_a_view(path: Path) -> None:
    _duckdb(path, "CREATE VIEW numbers AS SELECT 1 AS n")


def only_a_sequence_and_a_macro(path: Path) -> None:
    _duckdb(path, "CREATE SEQUENCE ids", "CREATE MACRO twice(x) AS 2 * x")


def a_table_in_another_schema(path: Path) -> None:
    _duckdb(path, "CREATE SCHEMA app", "CREATE TABLE app.runs (id INTEGER)")


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def text_file(path: Path) -> None:
    path.write_text("run_id,status\nabc,complete\n")


FOREIGN: dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    runs_with_other_columns, unrelated_tables, foreign_schema_version, schema_version_with_other_columns,
    empty_schema_version_beside_foreign_tables, schema_version_99, ours_from_a_newer_harness,
    ours_with_a_column_dropped, ours_with_a_column_retyped, ours_with_a_table_missing, ours_with_a_gap_in_versions,
    only_a_view, only_a_sequence_and_a_macro, a_table_in_another_schema, random_bytes, text_file)}
NEWER = {"schema_version_99", "ours_from_a_newer_harness"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(directory: Path) -> dict[str, str]:
    """Every file under the folder with its digest: nothing may appear (a .wal), change or vanish."""
    return {str(p.relative_to(directory)): (_sha256(p) if p.is_file() else "dir") for p in sorted(directory.rglob("*"))}


@pytest.fixture(params=sorted(FOREIGN))
def foreign_db(request, tmp_path) -> tuple[str, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "results.duckdb"
    FOREIGN[request.param](path)
    return request.param, path


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_foreign_or_newer_database_is_refused_unchanged(foreign_db, read_only):
    kind, path = foreign_db
    before = _state(path.parent)
    with pytest.raises(UsageError) as exc:
        Store(path, read_only=read_only)
    message = _one_line_error(exc)
    assert str(path) in message
    if kind in NEWER:
        assert "newer" in message
    elif kind in ("random_bytes", "text_file"):
        assert "cannot open database" in message
    else:
        assert "not a harness results database" in message
    assert _state(path.parent) == before
    assert not Path(str(path) + ".wal").exists()
    with pytest.raises(UsageError):  # and again: the first refusal left nothing that would let a second one through
        Store(path, read_only=read_only)
    assert _state(path.parent) == before


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_directory_path_is_refused(tmp_path, read_only):
    folder = tmp_path / "results.duckdb"
    folder.mkdir()
    (folder / "inside").write_text("x")
    before = _state(tmp_path)
    with pytest.raises(UsageError) as exc:
        Store(folder, read_only=read_only)
    assert "is a directory" in _one_line_error(exc)
    assert _state(tmp_path) == before


def test_messages_name_what_is_wrong(tmp_path):
    cases = {
        runs_with_other_columns: "table runs and no schema_version",
        unrelated_tables: "table customers, table orders and no schema_version",
        ours_with_a_column_dropped: "table runs differs from schema version",
        ours_with_a_column_retyped: "value VARCHAR, not DOUBLE",
        ours_with_a_table_missing: "table cache of schema version",
        only_a_sequence_and_a_macro: "macro twice, sequence ids",
        schema_version_99: "schema version 99, newer than this harness",
    }
    for build, words in cases.items():
        path = tmp_path / f"{build.__name__}.duckdb"
        build(path)
        with pytest.raises(UsageError, match=words):
            Store(path)


# ---- what must still work ------------------------------------------------------------------------

def test_new_database_in_a_missing_file_and_folder(tmp_path):
    path = tmp_path / "new" / "sub" / "results.duckdb"
    Store(path).close()
    Store(path, read_only=True).close()


def test_new_database_in_an_empty_file(tmp_path):
    """`--db "$(mktemp)"`: a 0-byte file is a new database when opened for writing."""
    path = tmp_path / "empty.duckdb"
    path.touch()
    with pytest.raises(UsageError, match="no results database at .*empty"):
        Store(path, read_only=True)
    assert path.stat().st_size == 0
    Store(path).close()
    store = Store(path, read_only=True)
    assert store.runs().empty
    store.close()


def test_empty_duckdb_file_is_a_new_database(tmp_path):
    path = tmp_path / "blank.duckdb"
    duckdb.connect(str(path)).close()
    Store(path).close()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_empty_schema_version_alone_is_migrated(tmp_path):
    """A file where an earlier harness created schema_version and nothing else."""
    path = tmp_path / "half.duckdb"
    _duckdb(path, migrations.VERSION_TABLE)
    Store(path).close()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_read_only_on_a_missing_path_creates_nothing(tmp_path):
    path = tmp_path / "no" / "such" / "results.duckdb"
    with pytest.raises(UsageError) as exc:
        Store(path, read_only=True)
    assert _one_line_error(exc).startswith(f"no results database at {path}")
    assert list(tmp_path.iterdir()) == []


def test_older_database_is_read_as_is_and_upgraded_for_writing(tmp_path):
    path = tmp_path / "v1.duckdb"
    _ours(path, 1)
    before = _sha256(path)
    store = Store(path, read_only=True)
    assert store.runs().empty
    store.close()
    assert _sha256(path) == before
    Store(path).close()
    con = duckdb.connect(str(path), read_only=True)
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == \
        list(range(1, SCHEMA_VERSION + 1))
    con.close()


def test_a_table_of_the_users_own_beside_ours_is_kept(tmp_path):
    path = tmp_path / "mine.duckdb"
    _ours(path, SCHEMA_VERSION, "CREATE TABLE my_notes (run_id VARCHAR, note VARCHAR)",
          "CREATE VIEW my_view AS SELECT run_id FROM runs")
    Store(path).close()
    Store(path, read_only=True).close()


def test_opening_our_database_writes_nothing(tmp_path):
    path = tmp_path / "ours.duckdb"
    Store(path).close()
    before = _sha256(path)
    Store(path).close()
    Store(path, read_only=True).close()
    assert _sha256(path) == before


def test_failed_migration_of_a_new_database_leaves_no_schema_version(tmp_path, monkeypatch):
    """The schema_version table is created inside the migration's transaction, not before it."""
    path = tmp_path / "new.duckdb"
    monkeypatch.setattr(migrations, "MIGRATIONS", [["CREATE TABLE runs (x INTEGER)", "THIS IS NOT SQL"]])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 1)
    with pytest.raises(UsageError, match="cannot migrate"):
        Store(path)
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 0
    con.close()


# ---- the same through the CLI --------------------------------------------------------------------

CLI_KINDS = ["runs_with_other_columns", "unrelated_tables", "schema_version_99", "ours_with_a_column_dropped",
             "random_bytes"]
COMMANDS = {
    "runs": lambda db: ["runs", "--db", db],
    "show": lambda db: ["show", "X", "--db", db],
    "compare": lambda db: ["compare", "A", "B", "--db", db],
    "tag": lambda db: ["tag", "X", "T", "--db", db],
}


def _assert_clean_exit_2(result, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.slow  # the CLI as a subprocess
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", CLI_KINDS)
def test_cli_refuses_a_foreign_database(tmp_path, kind, command):
    path = tmp_path / "results.duckdb"
    FOREIGN[kind](path)
    before = _state(tmp_path)
    result = harness_cli(*COMMANDS[command](str(path)))
    _assert_clean_exit_2(result, str(path))
    assert _state(tmp_path) == before


@pytest.mark.slow  # the CLI as a subprocess
@pytest.mark.parametrize("command", ["runs", "show"])
def test_cli_on_a_directory_and_a_missing_path(tmp_path, command):
    folder = tmp_path / "adir"
    folder.mkdir()
    _assert_clean_exit_2(harness_cli(*COMMANDS[command](str(folder))), "is a directory")
    missing = tmp_path / "nowhere" / "results.duckdb"
    _assert_clean_exit_2(harness_cli(*COMMANDS[command](str(missing))), f"no results database at {missing}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
