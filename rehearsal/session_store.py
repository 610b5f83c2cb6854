"""The session store: open sessions and their code books, kept in SQLite so a restarted server has them.

One embedded file in the data directory (``sessions.sqlite3``, owner-only: it names people), no server.
``sessions`` lists each open session (its scenario and creation time) until it closes; ``codes`` holds each
session's invite and rejoin codes as the book keeps them: keyed hashes only (``rehearsal.invites``), never a
code. Written through by the reactor on each change, one short transaction each; WAL with synchronous=NORMAL
keeps a commit off the disk's flush path (a process crash loses nothing committed; a power cut may lose
the last moments), so a join does not wait for an fsync.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rehearsal.invites import CodeEntry
from rehearsal.roles import Role
from rehearsal.sqlite_files import open_owner_only

log = logging.getLogger("rehearsal.session_store")

SESSIONS_FILE = "sessions.sqlite3"  # in the server's data directory
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS codes (
    digest BLOB PRIMARY KEY,
    session TEXT NOT NULL,
    role TEXT NOT NULL,
    expires_at REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    participant INTEGER,
    name TEXT
);
CREATE INDEX IF NOT EXISTS codes_by_session ON codes(session);
"""


@dataclass(frozen=True)
class OpenSession:
    session: str
    scenario: str
    created_at: float


class SessionStore:
    """Open sessions and their codes in one SQLite file (a ``rehearsal.invites.CodeStore``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_owner_only(path, SCHEMA)
        self.failures = 0  # writes that failed (logged)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple) -> None:
        """One write; a failing disk is logged and counted, never raised into a join (the book in memory still
        holds the change: only its survival of a crash is lost)."""
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self.failures += 1
            log.error("session store: a write failed: %s", exc)

    # --- sessions ----------------------------------------------------------------------------------------

    def session_opened(self, session: str, scenario: str, created_at: float) -> None:
        self._write("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", (session, scenario, created_at))

    def session_closed(self, session: str) -> None:
        """The session ended (its result is in the results store): it and its codes go."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM codes WHERE session = ?", (session,))
            self._db.execute("DELETE FROM sessions WHERE session = ?", (session,))

    def open_sessions(self) -> list[OpenSession]:
        rows = self._db.execute("SELECT session, scenario, created_at FROM sessions ORDER BY created_at")
        return [OpenSession(*row) for row in rows]

    # --- codes (rehearsal.invites.CodeStore) -------------------------------------------------------------

    def code_added(self, entry: CodeEntry) -> None:
        self._write(
            "INSERT OR REPLACE INTO codes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.digest,
                entry.session,
                entry.role.value,
                entry.expires_at,
                entry.uses_left,
                entry.participant,
                entry.name,
            ),
        )

    def code_used(self, digest: bytes, uses_left: int) -> None:
        self._write("UPDATE codes SET uses_left = ? WHERE digest = ?", (uses_left, digest))

    def codes_revoked(self, session: str) -> None:
        self._write("DELETE FROM codes WHERE session = ?", (session,))

    def codes(self, now: float) -> list[CodeEntry]:
        """Every code still valid at ``now`` (wall clock), of the open sessions; the rest are deleted."""
        self._db.execute("DELETE FROM codes WHERE expires_at <= ? OR uses_left < 1", (now,))
        rows = self._db.execute(
            "SELECT digest, session, role, expires_at, uses_left, participant, name FROM codes"
            " WHERE session IN (SELECT session FROM sessions)"
        ).fetchall()
        out = []
        for digest, session, role, expires_at, uses_left, participant, name in rows:
            try:
                out.append(CodeEntry(bytes(digest), session, Role(role), expires_at, uses_left, participant, name))
            except ValueError:  # a role this version does not know: the code is left out
                continue
        return out
