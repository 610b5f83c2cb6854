"""The join service: sessions get invite codes per role; invites become netcode connect tokens.

A participant redeems an invite with a display name and receives a short-lived connect token (their
identity, session and role in its user data) and a personal rejoin code; the rejoin code mints fresh
tokens for the same participant, so a dropped headset reconnects with its role and instruments.

A join is checked whole before it spends anything: the name, the invite (``InviteBook.check``), the session
still running, room in the session's book for the participant's rejoin code, and a free seat in the room
(``reserve_seat``: a full room is refused here, with no token minted and no handshake spent); only then is
the rejoin code issued and one use of the invite spent. A participant keeps one rejoin code, revoked with the session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netcode.transport.address import Address
from netcode.transport.connect_token import generate_connect_token
from rehearsal.identity import Identity, clean_name, new_participant_id
from rehearsal.invites import InviteBook, InviteError
from rehearsal.roles import Role

TOKEN_EXPIRE_SECONDS = 30  # long enough to connect, short enough that a leaked token is soon useless
CONNECTION_TIMEOUT_SECONDS = 10
REJOIN_USES = 1000  # reconnects per participant (the code also goes when the session ends)


@dataclass(frozen=True)
class Ticket:
    """What a participant gets back: a connect token, who it names, and the code to come back with."""

    token: bytes
    identity: Identity
    rejoin_code: str
    expires_in: int


class NoFreeSeatError(InviteError):
    """A join refused because the room has no free seat (its capacity is taken by people connected and
    newcomers already holding a token); the invite is not spent."""


class JoinService:
    def __init__(
        self,
        private_key: bytes,
        protocol_id: int,
        server_addresses: Sequence[Address],
        invites: InviteBook | None = None,
        session_exists: Callable[[str], bool] = lambda session: True,
        on_rejoin: Callable[[Identity], None] = lambda identity: None,
        discard_session: Callable[[str], None] = lambda session: None,
        reserve_seat: Callable[[int, str, float], bool] = lambda participant, session, seconds: True,
    ) -> None:
        self._private_key = private_key
        self.protocol_id = protocol_id
        self.server_addresses = list(server_addresses)
        self.invites = invites if invites is not None else InviteBook()  # an empty book is falsy
        self.session_exists = session_exists
        self.on_rejoin = on_rejoin  # the server drops a stale connection of the participant coming back
        self.discard_session = discard_session  # the server frees a room whose invites could not be issued
        self.reserve_seat = reserve_seat  # (participant, session, seconds): False when the room is full

    def __repr__(self) -> str:  # never show the key
        return f"JoinService(protocol_id={self.protocol_id:#x}, servers={self.server_addresses})"

    def invite_team(self, session: str, roles: Sequence[Role] = tuple(Role), uses: int = 16) -> dict[Role, str]:
        """One invite code per role for a new session. If the codes cannot be issued (InviteError: too many
        sessions' books are open) the session's partial book is revoked and ``discard_session`` frees its room,
        so a failed creation leaves nothing behind."""
        try:
            return {Role(role): self.invites.issue(session, Role(role), uses=uses) for role in roles}
        except InviteError:
            self.invites.revoke_session(session)
            self.discard_session(session)
            raise

    def join(self, invite_code: object, display_name: object) -> Ticket:
        """Redeem an invite: a new participant with the invite's role (InviteError/IdentityError if not).

        The name is checked first, so a refused request does not use up one of the invite's uses."""
        name = clean_name(display_name)
        entry = self.invites.check(invite_code, personal=False)  # a rejoin code is not an invite
        if not self.session_exists(entry.session):
            raise InviteError("this session has ended")
        if not self.invites.has_room_for_participant(entry.session):
            raise InviteError("this session is full: it has had as many participants as it may")
        identity = Identity(entry.session, new_participant_id(), entry.role, name)
        ticket = self._ticket(identity, "")  # before anything is spent: a name too long for the token fails here
        if not self.reserve_seat(
            identity.participant, identity.session, TOKEN_EXPIRE_SECONDS + CONNECTION_TIMEOUT_SECONDS
        ):
            raise NoFreeSeatError("the room is full: try again when someone leaves")
        rejoin = self.invites.issue(
            identity.session, identity.role, uses=REJOIN_USES, participant=identity.participant, name=identity.name
        )
        self.invites.spend(entry)
        return Ticket(ticket.token, identity, rejoin, ticket.expires_in)

    def rejoin(self, rejoin_code: object) -> Ticket:
        """A fresh token for the same participant (same id, role and name)."""
        entry = self.invites.check(rejoin_code, personal=True)  # a team invite is refused, not used
        if not self.session_exists(entry.session):
            raise InviteError("this session has ended")
        identity = Identity(entry.session, int(entry.participant), entry.role, str(entry.name))  # type: ignore[arg-type]
        ticket = self._ticket(identity, rejoin_code if isinstance(rejoin_code, str) else "")
        self.invites.spend(entry)
        self.on_rejoin(identity)
        return ticket

    def ticket_for(self, identity: Identity) -> Ticket:
        """A token for an identity the caller vouches for (the operator's `rehearsal token`); no rejoin code."""
        return self._ticket(identity, "")

    def _ticket(self, identity: Identity, rejoin_code: str) -> Ticket:
        token = generate_connect_token(
            private_key=self._private_key,
            protocol_id=self.protocol_id,
            client_id=identity.participant,
            server_addresses=self.server_addresses,
            expire_seconds=TOKEN_EXPIRE_SECONDS,
            timeout_seconds=CONNECTION_TIMEOUT_SECONDS,
            user_data=identity.to_user_data(),
        ).encode()
        return Ticket(token, identity, rejoin_code, TOKEN_EXPIRE_SECONDS)
