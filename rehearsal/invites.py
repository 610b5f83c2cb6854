"""Code books: the invite codes (one per role) and personal rejoin codes of each session.

Codes are random (96 bits) bearer secrets, so only a keyed hash (HMAC-SHA256 under the server's key) of each
is kept, in memory and at rest (``rehearsal.session_store``); a stolen store does not give working codes.
Each session has its own book, bounded (``max_invites`` team invites, ``max_personal`` rejoin codes: one per
participant), and there is a bounded number of books (``max_sessions``); ending a session revokes its whole
book. A flood of joins to one session fills that session's book only: every other session keeps joining.

Redeeming a bad code gives one message whether it is unknown, expired, used up or of the other kind (no
oracle). ``check`` validates without spending and ``spend`` takes one use, so a join that fails for any
reason after the code was found valid (ended session, full book) keeps the code's use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from rehearsal.roles import Role

MAX_SESSIONS = 128  # open books; Sessions runs at most 64 rooms, and each room's book goes when it closes
MAX_INVITES_PER_SESSION = 64  # team invites (the join API issues one per role)
MAX_PERSONAL_PER_SESSION = 1024  # rejoin codes, one per participant who ever joined the session
MAX_CODE_CHARS = 64
REFUSED = "invite code not valid (unknown, used up or expired)"


def code_key(server_key: bytes) -> bytes:
    """The key of the codes' digests, derived from a server secret (the token key): stable across restarts,
    and a different key from the one that signs tokens."""
    return hmac.new(server_key, b"rehearsal invite and rejoin codes", hashlib.sha256).digest()


class InviteError(ValueError):
    """An invite that cannot be issued or redeemed."""


@dataclass
class CodeEntry:
    """One code's record (the code itself is never kept: ``digest`` is its keyed hash)."""

    digest: bytes
    session: str
    role: Role
    expires_at: float  # wall-clock seconds
    uses_left: int
    participant: int | None = None  # set for a personal (rejoin) code
    name: str | None = None

    @property
    def personal(self) -> bool:
        return self.participant is not None and self.name is not None


@dataclass(frozen=True)
class Redeemed:
    session: str
    role: Role
    participant: int | None
    name: str | None


class CodeStore(Protocol):
    """Where a book's changes go to survive a restart (``rehearsal.session_store.SessionStore``)."""

    def code_added(self, entry: CodeEntry) -> None: ...

    def code_used(self, digest: bytes, uses_left: int) -> None: ...

    def codes_revoked(self, session: str) -> None: ...


@dataclass
class _SessionBook:
    codes: dict[bytes, CodeEntry] = field(default_factory=dict)
    invites: int = 0
    personal: dict[int, bytes] = field(default_factory=dict)  # participant -> digest of their rejoin code


class InviteBook:
    """Every open session's book (see the module doc). ``key``: the HMAC key of the digests (random when not
    given: codes then do not survive the process); ``store``: where changes are written through."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        key: bytes | None = None,
        store: CodeStore | None = None,
        max_sessions: int = MAX_SESSIONS,
        max_invites: int = MAX_INVITES_PER_SESSION,
        max_personal: int = MAX_PERSONAL_PER_SESSION,
    ) -> None:
        self.clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)
        self.store = store
        self.max_sessions = max_sessions
        self.max_invites = max_invites
        self.max_personal = max_personal
        self._books: dict[str, _SessionBook] = {}
        self._index: dict[bytes, CodeEntry] = {}

    def __repr__(self) -> str:  # never show the key
        return f"InviteBook(sessions={len(self._books)}, codes={len(self._index)})"

    def digest(self, code: str) -> bytes:
        """The keyed hash a code is known by."""
        return hmac.new(self._key, code.encode("utf-8", "replace"), hashlib.sha256).digest()

    # --- books -------------------------------------------------------------------------------------------

    def open_session(self, session: str) -> None:
        """Make room for a session's book (idempotent); InviteError when ``max_sessions`` books are open."""
        if session in self._books:
            return
        if len(self._books) >= self.max_sessions:
            raise InviteError(f"this server already keeps codes for {self.max_sessions} sessions")
        self._books[session] = _SessionBook()

    def revoke_session(self, session: str) -> int:
        """Forget every code of a session (it ended) and its book; returns how many codes."""
        book = self._books.pop(session, None)
        if self.store is not None:
            self.store.codes_revoked(session)
        if book is None:
            return 0
        for digest in book.codes:
            self._index.pop(digest, None)
        return len(book.codes)

    def has_room_for_participant(self, session: str) -> bool:
        """The session's book can take one more rejoin code."""
        book = self._books.get(session)
        return book is not None and len(book.personal) < self.max_personal

    # --- codes -------------------------------------------------------------------------------------------

    def issue(
        self,
        session: str,
        role: Role,
        uses: int = 16,
        ttl: float = 24 * 3600,
        participant: int | None = None,
        name: str | None = None,
    ) -> str:
        """A new code for ``role`` in ``session``, valid ``uses`` times for ``ttl`` seconds (a personal code
        when ``participant`` and ``name`` are given; a participant has one, which a new one replaces)."""
        if uses < 1 or ttl <= 0:
            raise InviteError("an invite needs at least one use and a positive lifetime")
        self.open_session(session)
        book = self._books[session]
        personal = participant is not None and name is not None
        if personal and participant not in book.personal and len(book.personal) >= self.max_personal:
            self._purge(book)
            if len(book.personal) >= self.max_personal:
                raise InviteError(f"this session already has {self.max_personal} participants")
        if not personal and book.invites >= self.max_invites:
            self._purge(book)
            if book.invites >= self.max_invites:
                raise InviteError(f"this session already has {self.max_invites} open invites")
        code = secrets.token_urlsafe(12)
        entry = CodeEntry(self.digest(code), session, Role(role), self.clock() + ttl, uses, participant, name)
        if personal and participant in book.personal:
            self._drop(book, book.personal[participant])
        self._add(entry)
        if self.store is not None:
            self.store.code_added(entry)
        return code

    def check(self, code: object, *, personal: bool | None = None) -> CodeEntry:
        """The valid code's entry, without spending a use; InviteError (one message for every failure).

        ``personal=True`` accepts only a personal (rejoin) code, ``False`` only a team invite."""
        entry = None
        if isinstance(code, str) and len(code) <= MAX_CODE_CHARS:
            digest = self.digest(code)
            entry = self._index.get(digest)
            if entry is not None and not hmac.compare_digest(entry.digest, digest):
                entry = None
        if entry is None or entry.expires_at <= self.clock() or entry.uses_left < 1:
            raise InviteError(REFUSED)
        if personal is not None and personal != entry.personal:
            raise InviteError(REFUSED)
        return entry

    def spend(self, entry: CodeEntry) -> None:
        """Take one use of a code ``check`` returned."""
        if entry.uses_left < 1 or self._index.get(entry.digest) is not entry:
            raise InviteError(REFUSED)
        entry.uses_left -= 1
        if self.store is not None:
            self.store.code_used(entry.digest, entry.uses_left)

    def redeem(self, code: object, *, personal: bool | None = None) -> Redeemed:
        """Check and spend a code in one go."""
        entry = self.check(code, personal=personal)
        self.spend(entry)
        return Redeemed(entry.session, entry.role, entry.participant, entry.name)

    def load(self, entries: Iterable[CodeEntry]) -> int:
        """Entries kept by a store (a restart); bounds still hold: what does not fit is left out."""
        loaded = 0
        for entry in entries:
            try:
                self.open_session(entry.session)
            except InviteError:
                continue
            book = self._books[entry.session]
            if entry.personal and len(book.personal) >= self.max_personal and entry.participant not in book.personal:
                continue
            if not entry.personal and book.invites >= self.max_invites:
                continue
            if entry.personal and entry.participant in book.personal:
                self._drop(book, book.personal[entry.participant])
            self._add(entry)
            loaded += 1
        return loaded

    def sessions(self) -> list[str]:
        return list(self._books)

    def session_codes(self, session: str) -> int:
        book = self._books.get(session)
        return 0 if book is None else len(book.codes)

    def _add(self, entry: CodeEntry) -> None:
        book = self._books[entry.session]
        book.codes[entry.digest] = entry
        self._index[entry.digest] = entry
        if entry.personal:
            book.personal[int(entry.participant)] = entry.digest  # type: ignore[arg-type]
        else:
            book.invites += 1

    def _drop(self, book: _SessionBook, digest: bytes) -> None:
        entry = book.codes.pop(digest, None)
        self._index.pop(digest, None)
        if entry is None:
            return
        if entry.personal:
            book.personal.pop(int(entry.participant), None)  # type: ignore[arg-type]
        else:
            book.invites -= 1

    def _purge(self, book: _SessionBook) -> None:
        now = self.clock()
        for digest in [d for d, e in book.codes.items() if e.expires_at <= now or e.uses_left < 1]:
            self._drop(book, digest)

    def __len__(self) -> int:
        return len(self._index)
