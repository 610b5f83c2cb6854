"""The action journal: each acknowledged mentor action and completed step, on disk before anyone hears of it.

Why: a room's checkpoint is written every few seconds (``rehearsal.checkpoints``), so without the journal a
crash lost the mentor's last commands and the steps completed since the last checkpoint although the team
had been told of them. Now the reactor appends one row per accepted command (``command``: who, which
action, its validated arguments) and per step that completed or was violated (``step``: the step's
progress) and commits it *before* the command's event or the step's event (the ack) goes out. A
checkpoint remembers the journal's sequence number at its capture; on restart ``rehearsal.sessions``
replays the room's entries after that number on top of the checkpoint (a participant who joined after
that checkpoint is not in it, and their actions are not replayed: counted ``journal_not_replayed``).
Rows up to a written checkpoint's number are deleted, and a session's rows go with it, so the journal
holds only the last seconds of each open room (at most ``MAX_ENTRIES_PER_SESSION``).

How durable: SQLite in WAL mode with ``synchronous=NORMAL``, like the session store: a committed entry is in
the operating system's hands, so it survives the process dying at any point (SIGKILL, a crash: issue 19's
failure), for ~0.04 ms a write (p99 0.1 ms, measured on the dev machine). A power cut may lose the last
moments' entries; ``synchronous=FULL`` would survive that too but fsyncs every commit on the reactor
thread: 4 ms a write (p99 8 ms, unbounded on a busy disk), a stall of every room per mentor click.

One embedded file in the data directory (``journal.sqlite3``, owner-only: arguments may hold annotations'
text), written only on the reactor thread. A failing disk is counted and logged, never raised into a
command: the room goes on, only the action's survival of a crash is at risk (and the alert on
``rehearsal_journal_writes_total{outcome="failed"}`` says so).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from rehearsal.sqlite_files import open_owner_only

log = logging.getLogger("rehearsal.journal")

JOURNAL_FILE = "journal.sqlite3"  # in the server's data directory
# A checkpoint every few seconds prunes a room's rows; this many pending means checkpoints keep failing.
MAX_ENTRIES_PER_SESSION = 20_000
MAX_ENTRY_BYTES = 64 * 1024  # a command's arguments are bounded far below this (rehearsal.wire)
SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_by_session ON journal(session, seq);
"""
KINDS = ("command", "step")


@dataclass(frozen=True)
class Entry:
    """One journaled action: its sequence number, ``command`` or ``step``, and what it carried."""

    seq: int
    kind: str
    body: dict[str, Any]


class ActionJournal:
    """Mentor actions and completed steps of the open sessions (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_owner_only(path, SCHEMA)  # a commit survives the process (see the module doc)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
        self.last_seq = int(row[0])  # the newest entry's number: what a checkpoint taken now has seen
        self._pending: Counter[str] = Counter(
            dict(self._db.execute("SELECT session, COUNT(*) FROM journal GROUP BY session").fetchall())
        )
        self.counters: Counter[str] = Counter()  # written, failed, full; seconds: total write time
        self.last_seconds = 0.0

    def close(self) -> None:
        self._db.close()

    def append(self, session: str, kind: str, body: dict[str, Any]) -> int | None:
        """Write one entry and commit it; its sequence number, or None when it could not be kept (counted)."""
        if kind not in KINDS:
            raise ValueError(f"unknown journal entry kind {kind!r}")
        if self._pending[session] >= MAX_ENTRIES_PER_SESSION:
            self.counters["full"] += 1
            self.counters["failed"] += 1
            return None
        started = time.perf_counter()
        try:
            data = msgpack.packb(body, use_bin_type=True, default=_scalar)
            if len(data) > MAX_ENTRY_BYTES:
                raise ValueError(f"a journal entry of {len(data)} bytes is over {MAX_ENTRY_BYTES}")
            cursor = self._db.execute(
                "INSERT INTO journal (session, kind, body) VALUES (?, ?, ?)", (session, kind, data)
            )
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self.counters["failed"] += 1
            log.error("journal: session %s: a %s could not be written: %s", session, kind, exc)
            return None
        self.last_seconds = time.perf_counter() - started
        self.counters["written"] += 1
        self.counters["seconds"] += self.last_seconds
        self._pending[session] += 1
        self.last_seq = max(self.last_seq, int(cursor.lastrowid or 0))
        return self.last_seq

    def entries(self, session: str, after: int = 0) -> list[Entry]:
        """The session's entries numbered above ``after`` (a checkpoint's), oldest first; unreadable ones are
        left out (logged)."""
        rows = self._db.execute(
            "SELECT seq, kind, body FROM journal WHERE session = ? AND seq > ? ORDER BY seq", (session, after)
        ).fetchall()
        out = []
        for seq, kind, data in rows:
            try:
                body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException) as exc:
                log.error("journal: session %s: entry %d is unreadable: %s", session, seq, exc)
                continue
            if kind in KINDS and isinstance(body, dict):
                out.append(Entry(int(seq), kind, body))
        return out

    def checkpointed(self, session: str, upto: int) -> None:
        """A checkpoint that had seen entries up to ``upto`` is on disk: they are no longer needed."""
        self._delete("DELETE FROM journal WHERE session = ? AND seq <= ?", (session, upto), session)

    def forget(self, session: str) -> None:
        """The session closed (its result is stored): its entries go."""
        self._delete("DELETE FROM journal WHERE session = ?", (session,), session)

    def pending(self, session: str) -> int:
        return self._pending.get(session, 0)

    def _delete(self, sql: str, args: tuple, session: str) -> None:
        try:
            self._db.execute(sql, args)
            left = self._db.execute("SELECT COUNT(*) FROM journal WHERE session = ?", (session,)).fetchone()[0]
        except sqlite3.Error as exc:
            log.error("journal: session %s: could not delete entries: %s", session, exc)
            return
        if left:
            self._pending[session] = int(left)
        else:
            self._pending.pop(session, None)


def _scalar(value: object) -> object:
    """numpy scalars (a step's value, an instrument id) as Python numbers; anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot journal a {type(value).__name__}")
