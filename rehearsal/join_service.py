"""The join service: sessions get invite codes per role; invites become netcode connect tokens.

A participant redeems an invite with a display name and receives a short-lived connect token (their
identity, session and role in its user data) and a personal rejoin code; the rejoin code mints fresh
tokens for the same participant, so a dropped headset reconnects with its role and instruments.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netcode.transport.address import Address
from netcode.transport.connect_token import generate_connect_token
from rehearsal.identity import Identity, clean_name
from rehearsal.invites import InviteBook, InviteError
from rehearsal.roles import Role

TOKEN_EXPIRE_SECONDS = 30  # long enough to connect, short enough that a leaked token is soon useless
CONNECTION_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Ticket:
    """What a participant gets back: a connect token, who it names, and the code to come back with."""

    token: bytes
    identity: Identity
    rejoin_code: str
    expires_in: int


class JoinService:
    def __init__(
        self,
        private_key: bytes,
        protocol_id: int,
        server_addresses: Sequence[Address],
        invites: InviteBook | None = None,
        session_exists: Callable[[str], bool] = lambda session: True,
        on_rejoin: Callable[[Identity], None] = lambda identity: None,
    ) -> None:
        self._private_key = private_key
        self.protocol_id = protocol_id
        self.server_addresses = list(server_addresses)
        self.invites = invites or InviteBook()
        self.session_exists = session_exists
        self.on_rejoin = on_rejoin  # the server drops a stale connection of the participant coming back

    def __repr__(self) -> str:  # never show the key
        return f"JoinService(protocol_id={self.protocol_id:#x}, servers={self.server_addresses})"

    def invite_team(self, session: str, roles: Sequence[Role] = tuple(Role), uses: int = 16) -> dict[Role, str]:
        """One invite code per role for a new session."""
        return {Role(role): self.invites.issue(session, Role(role), uses=uses) for role in roles}

    def join(self, invite_code: object, display_name: object) -> Ticket:
        """Redeem an invite: a new participant with the invite's role (InviteError/IdentityError if not).

        The name is checked first, so a refused request does not use up one of the invite's uses."""
        name = clean_name(display_name)
        redeemed = self.invites.redeem(invite_code, personal=False)  # a rejoin code is not an invite
        if not self.session_exists(redeemed.session):
            raise InviteError("this session has ended")
        identity = Identity(redeemed.session, secrets.randbits(63) or 1, redeemed.role, name)
        rejoin = self.invites.issue(
            identity.session, identity.role, uses=1000, participant=identity.participant, name=identity.name
        )
        return self._ticket(identity, rejoin)

    def rejoin(self, rejoin_code: object) -> Ticket:
        """A fresh token for the same participant (same id, role and name)."""
        redeemed = self.invites.redeem(rejoin_code, personal=True)  # a team invite is refused, not used
        if not self.session_exists(redeemed.session):
            raise InviteError("this session has ended")
        identity = Identity(redeemed.session, redeemed.participant, redeemed.role, redeemed.name)
        self.on_rejoin(identity)
        return self._ticket(identity, rejoin_code if isinstance(rejoin_code, str) else "")

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
