"""Invite codes: an admin gets one per role when creating a session; a participant redeems it.

Codes are random (96 bits), stored only as SHA-256 digests, expire, and have a use count. Redeeming a
bad code gives one message whether it is unknown, expired or used up (no oracle). The book is bounded.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from rehearsal.roles import Role


class InviteError(ValueError):
    """An invite that cannot be issued or redeemed."""


@dataclass
class _Entry:
    session: str
    role: Role
    expires_at: float
    uses_left: int
    participant: int | None = None  # set for a personal (rejoin) code
    name: str | None = None


@dataclass(frozen=True)
class Redeemed:
    session: str
    role: Role
    participant: int | None
    name: str | None


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8", "replace")).digest()


class InviteBook:
    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = 10_000) -> None:
        self.clock = clock
        self.capacity = capacity
        self._entries: dict[bytes, _Entry] = {}

    def issue(
        self,
        session: str,
        role: Role,
        uses: int = 16,
        ttl: float = 24 * 3600,
        participant: int | None = None,
        name: str | None = None,
    ) -> str:
        """A new code for `role` in `session`, valid `uses` times for `ttl` seconds."""
        if uses < 1 or ttl <= 0:
            raise InviteError("an invite needs at least one use and a positive lifetime")
        if len(self._entries) >= self.capacity:
            self._purge()
            if len(self._entries) >= self.capacity:
                raise InviteError("too many open invites; end old sessions first")
        code = secrets.token_urlsafe(12)
        self._entries[_digest(code)] = _Entry(session, Role(role), self.clock() + ttl, uses, participant, name)
        return code

    def redeem(self, code: object, *, personal: bool | None = None) -> Redeemed:
        """Use a code once; InviteError (the same for every failure) if it is not valid.

        ``personal=True`` accepts only a personal (rejoin) code, ``False`` only a team invite; a code of the
        other kind is refused like an unknown one and keeps its uses."""
        entry = self._entries.get(_digest(code)) if isinstance(code, str) and len(code) <= 64 else None
        if entry is None or entry.expires_at <= self.clock() or entry.uses_left < 1:
            raise InviteError("invite code not valid (unknown, used up or expired)")
        if personal is not None and personal != (entry.participant is not None and entry.name is not None):
            raise InviteError("invite code not valid (unknown, used up or expired)")
        entry.uses_left -= 1
        return Redeemed(entry.session, entry.role, entry.participant, entry.name)

    def revoke_session(self, session: str) -> int:
        """Forget every code of a session (it ended); returns how many."""
        doomed = [k for k, e in self._entries.items() if e.session == session]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def _purge(self) -> None:
        now = self.clock()
        for k in [k for k, e in self._entries.items() if e.expires_at <= now or e.uses_left < 1]:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
