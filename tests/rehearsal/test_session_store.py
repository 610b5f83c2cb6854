"""The session store: open sessions and code books survive a restart, as keyed hashes only."""

import stat

import pytest

from rehearsal.invites import InviteBook, InviteError
from rehearsal.roles import Role
from rehearsal.session_store import SessionStore

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_codes_and_their_uses_survive_a_restart_and_only_their_keyed_hashes_are_kept(tmp_path):
    path = tmp_path / "sessions.sqlite3"
    clock = Clock()
    store = SessionStore(path)
    store.session_opened("s-1", "basic_skills", 12.5)
    book = InviteBook(clock, key=KEY, store=store)
    invite = book.issue("s-1", Role.OBSERVER, uses=3)
    rejoin = book.issue("s-1", Role.LEAD_SURGEON, uses=1000, participant=7, name="Ada")
    book.redeem(invite)
    store.close()  # the process dies

    again = SessionStore(path)
    assert [(s.session, s.scenario, s.created_at) for s in again.open_sessions()] == [("s-1", "basic_skills", 12.5)]
    book = InviteBook(clock, key=KEY, store=again)
    assert book.load(again.codes(clock.now)) == 2
    assert book.check(invite).uses_left == 2  # the use spent before the crash stays spent
    assert book.redeem(rejoin, personal=True).participant == 7
    raw = path.read_bytes() + (tmp_path / "sessions.sqlite3-wal").read_bytes()
    assert invite.encode() not in raw and rejoin.encode() not in raw  # bearer secrets are never at rest
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other_key = InviteBook(clock, key=b"j" * 32)
    other_key.load(again.codes(clock.now))
    with pytest.raises(InviteError):
        other_key.check(invite)  # a copied store is useless without the server's key


def test_a_closed_session_its_codes_and_expired_codes_are_gone_after_a_restart(tmp_path):
    path = tmp_path / "sessions.sqlite3"
    clock = Clock()
    store = SessionStore(path)
    for session in ("s-1", "s-2"):
        store.session_opened(session, "basic_skills", 0.0)
    book = InviteBook(clock, key=KEY, store=store)
    book.issue("s-1", Role.OBSERVER)
    short = book.issue("s-2", Role.OBSERVER, ttl=10)
    kept = book.issue("s-2", Role.MENTOR, ttl=100)
    book.revoke_session("s-1")
    store.session_closed("s-1")
    clock.now += 50
    store.close()

    again = SessionStore(path)
    assert [s.session for s in again.open_sessions()] == ["s-2"]
    book = InviteBook(clock, key=KEY, store=again)
    assert book.load(again.codes(clock.now)) == 1
    assert book.check(kept).role is Role.MENTOR
    with pytest.raises(InviteError):
        book.check(short)


def test_loading_keeps_the_books_bounds(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite3")
    clock = Clock()
    writer = InviteBook(clock, key=KEY, store=store)
    for session in ("a", "b", "c"):
        store.session_opened(session, "basic_skills", 0.0)
        for _ in range(3):
            writer.issue(session, Role.OBSERVER)
    reader = InviteBook(clock, key=KEY, max_sessions=2, max_invites=2)
    assert reader.load(store.codes(clock.now)) == 4 and len(reader.sessions()) == 2


def test_a_failing_store_is_counted_and_never_stops_a_join(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite3")
    book = InviteBook(Clock(), key=KEY, store=store)
    store.close()  # as good as a failed disk: every write raises
    code = book.issue("s-1", Role.OBSERVER)
    assert book.redeem(code).session == "s-1" and store.failures == 2
