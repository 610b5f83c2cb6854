"""A process's join codes, published to the directory so any join service routes them to its session.

``PublishingCodeStore`` wraps the session store (``rehearsal.invites.CodeStore``): each code the book adds is
written through as before, then handed (its keyed hash, session and expiry: never the code) to the heartbeat
thread, which publishes it. ``stored_codes`` reads every live code back from the session store's file on the
heartbeat's thread (its own read-only connection) for a full resync after an outage.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rehearsal.fleet.directory import CodeRoute
from rehearsal.invites import CodeEntry, CodeStore


class PublishingCodeStore:
    """A ``CodeStore`` that writes through to ``inner`` and hands each new code's route to ``publish``."""

    def __init__(self, inner: CodeStore | None, publish: Callable[[Sequence[CodeRoute]], None]) -> None:
        self.inner = inner
        self.publish = publish

    def code_added(self, entry: CodeEntry) -> None:
        if self.inner is not None:
            self.inner.code_added(entry)
        self.publish([CodeRoute(entry.digest, entry.session, entry.expires_at)])

    def code_used(self, digest: bytes, uses_left: int) -> None:
        if self.inner is not None:
            self.inner.code_used(digest, uses_left)

    def codes_revoked(self, session: str) -> None:
        if self.inner is not None:
            self.inner.codes_revoked(session)  # the directory forgets the room: its codes route nowhere


def stored_codes(path: Path, now: float | None = None) -> list[CodeRoute]:
    """Every code of an open session still valid in the session store at ``path`` (read-only; [] if absent)."""
    now = time.time() if now is None else now
    if not Path(path).exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        rows = db.execute(
            "SELECT digest, session, expires_at FROM codes WHERE expires_at > ? AND uses_left > 0"
            " AND session IN (SELECT session FROM sessions)",
            (now,),
        ).fetchall()
    finally:
        db.close()
    return [CodeRoute(bytes(d), str(s), float(e)) for d, s, e in rows]
