"""Secrets, identities, invites and the join service."""

import os
import stat

import pytest

from netcode.transport.address import Address
from netcode.transport.connect_token import ConnectToken, decrypt_private_token
from rehearsal.identity import USER_DATA_BYTES, Identity, IdentityError, clean_name
from rehearsal.invites import InviteBook, InviteError
from rehearsal.join_service import CONNECTION_TIMEOUT_SECONDS, TOKEN_EXPIRE_SECONDS, JoinService, NoFreeSeatError
from rehearsal.roles import Role
from rehearsal.secrets_store import SecretError, load_or_create

SERVER = Address.parse("127.0.0.1:40000")
KEY = bytes(range(32))
PROTOCOL = 0x5355524745525931


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- secrets --------------------------------------------------------------------------------------------


def test_secret_is_generated_once_with_owner_only_permissions(tmp_path):
    first = load_or_create(tmp_path, "token_key")
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / "token_key").stat().st_mode) == 0o600
    assert load_or_create(tmp_path, "token_key") == first


def test_secret_readable_by_others_is_refused(tmp_path):
    load_or_create(tmp_path, "token_key")
    os.chmod(tmp_path / "token_key", 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_or_create(tmp_path, "token_key")


def test_secret_from_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TOKEN_KEY", "ab" * 32)
    assert load_or_create(tmp_path, "token_key", env_var="TEST_TOKEN_KEY") == b"\xab" * 32
    assert not (tmp_path / "token_key").exists()
    monkeypatch.setenv("TEST_TOKEN_KEY", "zz")
    with pytest.raises(SecretError, match="must be hex"):
        load_or_create(tmp_path, "token_key", env_var="TEST_TOKEN_KEY")


# --- identity -------------------------------------------------------------------------------------------


def test_identity_round_trips_through_256_bytes():
    who = Identity("s-1", 12345, Role.MENTOR, "Dr. Ada")
    data = who.to_user_data()
    assert len(data) == USER_DATA_BYTES
    assert Identity.from_user_data(data) == who


@pytest.mark.parametrize("data", [b"", bytes(256), b"\xff" * 256, b"\x81\xa1v\x02" + bytes(252)])
def test_garbage_user_data_is_refused(data):
    with pytest.raises(IdentityError):
        Identity.from_user_data(data)


def test_display_names_are_cleaned():
    assert clean_name("  Dr.\x00 Who\n ") == "Dr. Who"
    assert len(clean_name("x" * 500)) == 48
    for bad in ("", "   ", None, 42):
        with pytest.raises(IdentityError):
            clean_name(bad)


# --- invites --------------------------------------------------------------------------------------------


def test_invites_expire_and_run_out_with_one_message():
    clock = Clock()
    book = InviteBook(clock)
    once = book.issue("s", Role.OBSERVER, uses=1, ttl=60)
    assert book.redeem(once).role is Role.OBSERVER
    later = book.issue("s", Role.MENTOR, uses=5, ttl=60)
    clock.now += 61
    messages = set()
    for code in (once, later, "made-up", None, "x" * 1000):
        with pytest.raises(InviteError) as err:
            book.redeem(code)
        messages.add(str(err.value))
    assert len(messages) == 1


def test_each_sessions_book_is_bounded_and_revoked_on_its_own():
    book = InviteBook(max_invites=3, max_personal=2)
    for _ in range(3):
        book.issue("s", Role.OBSERVER)
    with pytest.raises(InviteError, match="open invites"):
        book.issue("s", Role.OBSERVER)
    book.issue("t", Role.OBSERVER)  # another session's book is not full
    book.issue("s", Role.OBSERVER, participant=1, name="a")
    again = book.issue("s", Role.OBSERVER, participant=1, name="a")  # a participant keeps one code
    book.issue("s", Role.OBSERVER, participant=2, name="b")
    assert book.session_codes("s") == 5 and not book.has_room_for_participant("s")
    with pytest.raises(InviteError, match="participants"):
        book.issue("s", Role.OBSERVER, participant=3, name="c")
    assert book.redeem(again, personal=True).participant == 1
    assert book.revoke_session("s") == 5 and len(book) == 1 and book.sessions() == ["t"]
    with pytest.raises(InviteError):
        book.redeem(again, personal=True)  # revoked with its session


def test_the_number_of_books_is_bounded_and_an_ended_session_frees_its_place():
    book = InviteBook(max_sessions=2)
    book.issue("a", Role.OBSERVER)
    book.issue("b", Role.OBSERVER)
    with pytest.raises(InviteError, match="2 sessions"):
        book.issue("c", Role.OBSERVER)
    book.revoke_session("a")
    book.issue("c", Role.OBSERVER)
    assert sorted(book.sessions()) == ["b", "c"]


def test_codes_are_known_by_a_keyed_hash_only():
    one, other = InviteBook(key=b"k" * 32), InviteBook(key=b"j" * 32)
    code = one.issue("s", Role.MENTOR)
    assert one.digest(code) != other.digest(code)
    assert code not in repr(one) and one.digest(code) in {e.digest for e in [one.check(code)]}
    with pytest.raises(InviteError):
        other.check(code)


def test_a_flood_of_joins_to_one_session_fills_only_its_book():
    sessions = {"busy", "calm"}
    service = JoinService(
        KEY, PROTOCOL, [SERVER], invites=InviteBook(max_personal=5), session_exists=lambda s: s in sessions
    )
    flood = service.invite_team("busy", uses=100)[Role.OBSERVER]
    calm = service.invite_team("calm", uses=2)[Role.OBSERVER]
    for i in range(5):
        service.join(flood, f"bot {i}")
    with pytest.raises(InviteError, match="full"):
        service.join(flood, "one too many")
    assert service.invites.check(flood).uses_left == 95  # the refused join spent nothing
    assert service.join(calm, "newcomer").identity.session == "calm"


def test_creating_a_session_whose_invites_cannot_be_issued_leaves_nothing_behind():
    discarded = []
    service = JoinService(KEY, PROTOCOL, [SERVER], invites=InviteBook(max_invites=2), discard_session=discarded.append)
    with pytest.raises(InviteError):
        service.invite_team("s-1")  # five roles, room for two
    assert discarded == ["s-1"] and len(service.invites) == 0 and service.invites.sessions() == []


# --- join service ---------------------------------------------------------------------------------------


def _service(sessions=("s-1",)):
    return JoinService(KEY, PROTOCOL, [SERVER], session_exists=lambda s: s in sessions)


def test_joining_with_an_invite_mints_a_token_naming_the_participant():
    service = _service()
    invites = service.invite_team("s-1")
    assert set(invites) == set(Role)
    ticket = service.join(invites[Role.LEAD_SURGEON], "Alice")
    token = ConnectToken.decode(ticket.token)
    assert token.server_addresses == (SERVER,) and token.protocol_id == PROTOCOL
    private = decrypt_private_token(token.private_data, PROTOCOL, token.expire_timestamp, token.nonce, KEY)
    assert private is not None and private.client_id == ticket.identity.participant
    assert Identity.from_user_data(private.user_data) == ticket.identity
    assert ticket.identity.role is Role.LEAD_SURGEON and ticket.identity.name == "Alice"
    assert "0x" in repr(service) and KEY.hex() not in repr(service)


def test_rejoin_gives_the_same_participant_a_fresh_token():
    service = _service()
    first = service.join(service.invite_team("s-1")[Role.ASSISTANT_SURGEON], "Bob")
    again = service.rejoin(first.rejoin_code)
    assert again.identity == first.identity and again.token != first.token
    with pytest.raises(InviteError):
        service.rejoin(service.invite_team("s-1")[Role.OBSERVER])  # a team invite is not a rejoin code


def test_ended_sessions_and_bad_names_are_refused():
    service = _service(sessions=())
    with pytest.raises(InviteError, match="ended"):
        service.join(service.invite_team("gone")[Role.OBSERVER], "Carol")
    live = _service()
    with pytest.raises(IdentityError):
        live.join(live.invite_team("s-1")[Role.OBSERVER], "   ")


def test_refused_joins_and_rejoins_leave_the_invite_its_uses():
    ended = _service(sessions=())
    gone = ended.invite_team("gone", uses=1)[Role.OBSERVER]
    with pytest.raises(InviteError, match="ended"):
        ended.join(gone, "Carol")
    assert ended.invites.check(gone).uses_left == 1  # a join refused for an ended session spends nothing
    service = _service()
    invite = service.invite_team("s-1", uses=1)[Role.OBSERVER]
    with pytest.raises(IdentityError):
        service.join(invite, "  ")  # a bad name is refused before the invite is used
    with pytest.raises(InviteError):
        service.rejoin(invite)  # a team invite at rejoin is refused without being used
    ticket = service.join(invite, "Dan")
    assert ticket.identity.role is Role.OBSERVER
    with pytest.raises(InviteError):
        service.join(invite, "Eve")  # now it is used up
    with pytest.raises(InviteError):
        service.join(ticket.rejoin_code, "Mallory")  # a rejoin code mints no new participants
    assert service.rejoin(ticket.rejoin_code).identity.participant == ticket.identity.participant


def test_a_join_to_a_full_room_is_refused_before_a_token_and_spends_nothing():
    asked, full = [], [False]

    def reserve_seat(participant, session, seconds):
        asked.append((session, seconds))
        return not full[0]

    service = JoinService(KEY, PROTOCOL, [SERVER], reserve_seat=reserve_seat)
    invite = service.invite_team("s-1", uses=2)[Role.OBSERVER]
    ticket = service.join(invite, "Alice")  # a seat is held for as long as the token can be used to connect
    assert asked == [("s-1", TOKEN_EXPIRE_SECONDS + CONNECTION_TIMEOUT_SECONDS)]
    codes = len(service.invites)
    full[0] = True
    with pytest.raises(NoFreeSeatError, match="the room is full"):
        service.join(invite, "Bob")
    assert service.invites.check(invite).uses_left == 1 and len(service.invites) == codes  # nothing spent or issued
    assert service.rejoin(ticket.rejoin_code).identity == ticket.identity  # coming back never asks for a seat


def test_rejoin_tells_the_server_who_is_coming_back():
    back = []
    service = JoinService(KEY, PROTOCOL, [SERVER], on_rejoin=back.append)
    first = service.join(service.invite_team("s-1")[Role.LEAD_SURGEON], "Alice")
    assert back == []
    service.rejoin(first.rejoin_code)
    assert back == [first.identity]
