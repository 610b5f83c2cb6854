"""The data folder's SQLite files (sessions, journal, results): created owner-only, opened for the reactor."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_owner_only(path: Path, schema: str, *, wal: bool = True) -> sqlite3.Connection:
    """Open (creating it and its folder owner-only: they hold codes and trainees' records) and apply ``schema``.

    ``wal``: write-ahead log with autocommit and ``synchronous=NORMAL``, so each statement's commit survives the
    process being killed (not a power cut); without it, sqlite's default transactions and durability."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    if wal:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # used from the reactor only
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    else:
        db = sqlite3.connect(path, check_same_thread=False)  # one user at a time: the reactor
    db.executescript(schema)
    return db
