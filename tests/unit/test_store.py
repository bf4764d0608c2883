import duckdb
import pytest

from harness.core.errors import UsageError
from harness.store.db import MetricRow, SampleRow, Store
from harness.store.migrations import SCHEMA_VERSION


def _sample(doc_id: int, task: str = "t") -> SampleRow:
    return SampleRow(task=task, doc_id=doc_id, doc_hash=f"d{doc_id}", prompt_hash="p", target_hash="g", prompt="Q?",
                     target="A", response=[[-1.5, True]], extracted="A", metrics={"acc": 1.0}, loglikelihoods=[-1.5, -2.0])


def _run(store: Store, run_id: str = "r1", config_hash: str = "c") -> None:
    store.create_run(run_id, config_hash, {"model": "hf:x", "model_fingerprint": "fp", "backend": "hf", "backend_args": {},
                                           "tasks": ["t"], "seed": 1}, ["baseline"])


def test_new_database_is_at_current_schema_version(db_path):
    Store(db_path).close()
    con = duckdb.connect(str(db_path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"runs", "run_tags", "run_tasks", "samples", "metrics", "cache", "schema_version"} <= tables


def test_reopening_does_not_migrate_twice(db_path):
    Store(db_path).close()
    Store(db_path).close()
    con = duckdb.connect(str(db_path))
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_database_from_a_newer_harness_is_refused(db_path):
    Store(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(UsageError, match="newer"):
        Store(db_path)


def test_samples_are_never_duplicated(db_path):
    store = Store(db_path)
    _run(store)
    store.insert_samples("r1", [_sample(0), _sample(1)])
    store.insert_samples("r1", [_sample(1), _sample(2)])
    assert store.done_docs("r1", "t") == {0, 1, 2}
    assert store.con.execute("SELECT count(*) FROM samples").fetchone()[0] == 3
    lls = store.con.execute("SELECT loglikelihoods FROM samples WHERE doc_id = 0").fetchone()[0]
    assert lls == [-1.5, -2.0]


def test_cache_is_keyed_by_model_fingerprint(db_path):
    store = Store(db_path)
    store.cache_put("model-a", [("h1", "loglikelihood", [-1.0, True]), ("h2", "generate", ["x"])])
    assert store.cache_get("model-a", ["h1", "h2", "h3"]) == {"h1": [-1.0, True], "h2": ["x"]}
    assert store.cache_get("model-b", ["h1", "h2"]) == {}
    store.cache_put("model-a", [("h1", "loglikelihood", [-9.0, False])])  # first answer wins
    assert store.cache_get("model-a", ["h1"]) == {"h1": [-1.0, True]}


def test_runs_resume_lookup_and_tags(db_path):
    store = Store(db_path)
    _run(store, "r1", "cfg")
    assert store.resumable_run("cfg") == "r1"
    store.write_metrics("r1", [MetricRow("t", "acc", 0.5, 0.1, 0.3, 0.7, 10)])
    store.set_status("r1", "complete", {"seed": 1})
    assert store.resumable_run("cfg") is None
    assert store.resolve_run("baseline") == "r1"
    assert store.resolve_run("r") == "r1"
    with pytest.raises(UsageError):
        store.resolve_run("nope")
    assert store.metrics("r1").iloc[0]["value"] == 0.5
    assert list(store.runs(tag="baseline")["run_id"]) == ["r1"]
    assert store.runs(tag="other").empty


def test_unwritable_path_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot open database"):
        Store(blocker / "sub" / "db.duckdb")


def test_read_only_on_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results database"):
        Store(tmp_path / "none.duckdb", read_only=True)


def test_migration_path_upgrades_an_older_database_in_place(db_path, monkeypatch):
    """A database written at version 1 is brought to the newest version, data kept."""
    from harness.store import migrations

    store = Store(db_path)
    _run(store)
    store.insert_samples("r1", [_sample(0)])
    store.close()
    v2 = ["ALTER TABLE runs ADD COLUMN notes VARCHAR", "UPDATE runs SET notes = 'migrated'"]
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [v2])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", len(migrations.MIGRATIONS))
    con = duckdb.connect(str(db_path))
    assert migrations.migrate(con) == SCHEMA_VERSION + 1
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert con.execute("SELECT notes FROM runs WHERE run_id = 'r1'").fetchone()[0] == "migrated"
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 1


def test_failed_migration_leaves_the_database_at_its_version(db_path, monkeypatch):
    from harness.store import migrations

    Store(db_path).close()
    broken = ["ALTER TABLE runs ADD COLUMN notes VARCHAR", "THIS IS NOT SQL"]
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [broken])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", len(migrations.MIGRATIONS))
    con = duckdb.connect(str(db_path))
    with pytest.raises(duckdb.Error):
        migrations.migrate(con)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'").fetchall()}
    assert "notes" not in columns
