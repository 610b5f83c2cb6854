"""Debrief links: a read-only, session-scoped, expiring credential for one session's debrief.

A finished session's invite and rejoin codes are revoked when it ends, so a mentor would otherwise need the
admin credential to open the debrief. Instead a mentor's page gets, when it joins, a debrief key for that
session: ``SESSION:EXPIRES:MAC``, the MAC an HMAC-SHA256 over the session and expiry (Unix seconds) with the
server's ``debrief_key`` secret (the data folder's file, or ``REHEARSAL_DEBRIEF_KEY``, as the other server
secrets). It opens ``/debrief/api/SESSION`` (and its track) of that session only, until it expires, and
nothing else; verifying it compares MACs in constant time. Keys are never logged. The page puts the key in
the link's fragment (``/debrief?session=ID#key=...``), which browsers never send to a server or a Referer.

Who gets one: mentors (they lead the debrief; they may pass the link on to the team they train). Observers
(visitors, students watching the room) do not: the debrief shows each participant's assessment, pass or
fail, which is for the team and its mentors. An admin opens any debrief with the admin credential.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path

from rehearsal.secrets_store import SecretSpec, server_secret

DEBRIEF_KEY = SecretSpec("debrief_key", 32, "REHEARSAL_DEBRIEF_KEY")  # signs debrief links
LINK_SECONDS = 14 * 24 * 3600  # a debrief link opens the session's debrief for two weeks after it was issued
MAX_KEY_CHARS = 256
SCHEME = "Debrief"  # the Authorization scheme the debrief page sends a key with


class DebriefAccess:
    """Issues and checks debrief keys with one server secret (see the module doc)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the debrief secret must be at least 16 bytes")
        self._secret = secret
        self.clock = clock

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> DebriefAccess:
        """The server's: its secret from the data folder (created there on first use, owner-only)."""
        return cls(server_secret(data_dir, DEBRIEF_KEY))

    def _mac(self, session: str, expires: int) -> str:
        message = f"debrief|v1|{session}|{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, session: str, seconds: float = LINK_SECONDS) -> str:
        """A key opening ``session``'s debrief for ``seconds`` from now."""
        if not session or ":" in session:
            raise ValueError("a session id without ':' is needed")
        expires = int(self.clock() + seconds)
        return f"{session}:{expires}:{self._mac(session, expires)}"

    def check(self, key: str, session: str) -> str | None:
        """None when ``key`` opens ``session``'s debrief now, else why not (a sentence for the page)."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or key.count(":") != 2:
            return "not a debrief key"
        named, expires_text, mac = key.split(":")
        if not expires_text.isdigit() or len(expires_text) > 12:
            return "not a debrief key"
        expires = int(expires_text)
        genuine = hmac.compare_digest(mac.encode(), self._mac(named, expires).encode())
        if not genuine:
            return "this debrief key is not genuine"
        if named != session:
            return "this debrief key is for another session"
        if self.clock() > expires:
            return "this debrief link has expired: ask the admin"
        return None


def key_from_header(value: bytes | None) -> str | None:
    """The key of an ``Authorization: Debrief <key>`` header (None for any other header or none)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    scheme, _, key = text.partition(" ")
    if scheme != SCHEME or not key.strip():
        return None
    return key.strip()
