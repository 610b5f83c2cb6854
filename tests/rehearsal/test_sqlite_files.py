import stat

from rehearsal.sqlite_files import open_owner_only


def test_the_file_and_its_folder_are_owner_only_and_the_schema_applied(tmp_path):
    path = tmp_path / "data" / "x.sqlite3"
    db = open_owner_only(path, "CREATE TABLE IF NOT EXISTS t (a INTEGER)")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    db.execute("INSERT INTO t VALUES (1)")  # autocommit: another connection sees it at once
    assert open_owner_only(path, "").execute("SELECT a FROM t").fetchall() == [(1,)]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_without_wal_it_keeps_sqlites_default_journal(tmp_path):
    db = open_owner_only(tmp_path / "r.sqlite3", "CREATE TABLE t (a INTEGER)", wal=False)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
