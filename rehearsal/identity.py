"""Who a connection is: the identity carried in the connect token's 256 bytes of user data.

Layout: a msgpack map {"v": 1, "s": session id, "p": participant id, "r": role, "n": display name},
zero-padded to 256 bytes. The server trusts it because only the join service can mint tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import msgpack

from rehearsal.roles import Role

USER_DATA_BYTES = 256
VERSION = 1
MAX_NAME_CHARS = 48
# participant ids are drawn from [2^32, 2^61): a hand's instrument id (participant * 2 + hand) then fits an int64,
# and never meets the physics' own pseudo-instruments (the suture's hold points, ids from 60,000), nor small test ids
PARTICIPANT_ID_MIN = 1 << 32
PARTICIPANT_ID_END = 1 << 61


def new_participant_id() -> int:
    """A fresh random participant id (unguessable; see PARTICIPANT_ID_MIN for its range)."""
    return PARTICIPANT_ID_MIN + secrets.randbelow(PARTICIPANT_ID_END - PARTICIPANT_ID_MIN)


class IdentityError(ValueError):
    """User data that does not describe a participant."""


@dataclass(frozen=True)
class Identity:
    session: str
    participant: int
    role: Role
    name: str

    def to_user_data(self) -> bytes:
        packed = msgpack.packb(
            {"v": VERSION, "s": self.session, "p": self.participant, "r": self.role.value, "n": self.name}
        )
        if len(packed) > USER_DATA_BYTES:
            raise IdentityError("identity does not fit the token's 256 bytes of user data")
        return packed.ljust(USER_DATA_BYTES, b"\0")

    @classmethod
    def from_user_data(cls, data: bytes) -> Identity:
        try:
            fields = msgpack.Unpacker(raw=False, max_buffer_size=USER_DATA_BYTES)
            fields.feed(bytes(data))
            value = next(fields)
        except Exception as exc:  # msgpack raises several types on garbage
            raise IdentityError(f"user data is not an identity: {type(exc).__name__}") from None
        if not isinstance(value, dict) or value.get("v") != VERSION:
            raise IdentityError("user data is not a version-1 identity")
        session, participant, role, name = (value.get(k) for k in ("s", "p", "r", "n"))
        if not (isinstance(session, str) and isinstance(participant, int) and isinstance(name, str)):
            raise IdentityError("identity fields have the wrong types")
        try:
            return cls(session, participant, Role(role), name)
        except ValueError:
            raise IdentityError(f"unknown role {role!r}") from None


def clean_name(name: object) -> str:
    """A display name fit to show others: printable, trimmed, at most MAX_NAME_CHARS characters."""
    if not isinstance(name, str):
        raise IdentityError("the display name must be text")
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    if not cleaned:
        raise IdentityError("the display name is empty")
    return cleaned
