"""The results store: one row per finished session, with its people, steps and complications (SQLite).

Written when a room ends (by the mentor, when empty, or at a drain) and read for debriefs and by the
admin API. The file lives in the server's data directory with owner-only permissions: results name
people. SQLite keeps it embedded (no external service); each write is one short transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal.sqlite_files import open_owner_only

RESULTS_FILE = "results.sqlite3"  # in the server's data directory
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    end_state TEXT NOT NULL,
    frames INTEGER NOT NULL,
    simulated_seconds REAL NOT NULL,
    recording TEXT,
    complications TEXT NOT NULL,
    counters TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    session TEXT NOT NULL REFERENCES sessions(session),
    participant INTEGER NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    skills TEXT NOT NULL,
    PRIMARY KEY (session, participant)
);
CREATE TABLE IF NOT EXISTS steps (
    session TEXT NOT NULL REFERENCES sessions(session),
    position INTEGER NOT NULL,
    step TEXT NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    value REAL NOT NULL,
    time REAL,
    PRIMARY KEY (session, position)
);
"""


@dataclass
class SessionResult:
    """What a finished session leaves behind (plain data: the room builds it, the store keeps it)."""

    session: str
    scenario: str
    created_at: float
    ended_at: float
    end_state: str
    frames: int
    simulated_seconds: float
    steps: list[dict]
    complications: dict
    participants: list[dict]  # {participant, role, name, skills: {...}}
    counters: dict[str, int] = field(default_factory=dict)
    recording: str | None = None


class ResultsStore:
    """Sessions' results in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_owner_only(path, SCHEMA, wal=False)

    def close(self) -> None:
        self._db.close()

    def save(self, result: SessionResult) -> None:
        """Store a session's result (a session saved twice keeps its latest result)."""
        r = result
        with self._db:
            for table in ("steps", "participants", "sessions"):
                self._db.execute(f"DELETE FROM {table} WHERE session = ?", (r.session,))
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.session,
                    r.scenario,
                    r.created_at,
                    r.ended_at,
                    r.end_state,
                    r.frames,
                    r.simulated_seconds,
                    r.recording,
                    json.dumps(r.complications),
                    json.dumps(r.counters),
                ),
            )
            self._db.executemany(
                "INSERT INTO participants VALUES (?, ?, ?, ?, ?)",
                [
                    (r.session, p["participant"], p["role"], p["name"], json.dumps(p.get("skills", {})))
                    for p in r.participants
                ],
            )
            self._db.executemany(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.session, i, s["id"], s["title"], s["kind"], s["status"], s["value"], s.get("time"))
                    for i, s in enumerate(r.steps)
                ],
            )

    def sessions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest sessions first: id, scenario, times, end state and how many steps were done."""
        rows = self._db.execute(
            "SELECT s.session, s.scenario, s.created_at, s.ended_at, s.end_state, s.frames,"
            " (SELECT COUNT(*) FROM steps t WHERE t.session = s.session AND t.status = 'done'),"
            " (SELECT COUNT(*) FROM steps t WHERE t.session = s.session AND t.status = 'violated')"
            " FROM sessions s ORDER BY s.ended_at DESC LIMIT ?",
            (max(1, min(int(limit), 10_000)),),
        ).fetchall()
        keys = ("session", "scenario", "created_at", "ended_at", "end_state", "frames", "steps_done", "violations")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def session(self, session: str) -> dict[str, Any] | None:
        """One session's full result, or None."""
        row = self._db.execute("SELECT * FROM sessions WHERE session = ?", (session,)).fetchone()
        if row is None:
            return None
        columns = [d[0] for d in self._db.execute("SELECT * FROM sessions LIMIT 0").description]
        out = dict(zip(columns, row, strict=True))
        out["complications"] = json.loads(out["complications"])
        out["counters"] = json.loads(out["counters"])
        out["participants"] = [
            {"participant": pid, "role": role, "name": name, "skills": json.loads(skills)}
            for pid, role, name, skills in self._db.execute(
                "SELECT participant, role, name, skills FROM participants WHERE session = ? ORDER BY participant",
                (session,),
            )
        ]
        out["steps"] = [
            {"id": step, "title": title, "kind": kind, "status": status, "value": value, "time": time}
            for step, title, kind, status, value, time in self._db.execute(
                "SELECT step, title, kind, status, value, time FROM steps WHERE session = ? ORDER BY position",
                (session,),
            )
        ]
        return out
