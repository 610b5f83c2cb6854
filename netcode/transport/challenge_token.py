"""Challenge tokens (netcode 1.02): proof that a client really receives packets at its source address.

The server answers a valid connection request with a challenge packet carrying an encrypted challenge
token that only the server can read; the client must echo it in a response packet. A client spoofing
its source address never sees the token and cannot complete the handshake.

Plaintext (zero padded to 284 bytes): client id (u64) | user data (256).
Encrypted with ChaCha20-Poly1305 IETF under a random per-server-process key, no associated data, nonce
= 4 zero bytes + challenge token sequence (u64 LE); 284 ciphertext + 16 MAC = 300 bytes.
"""

import struct
from dataclasses import dataclass

from netcode.transport.constants import CHALLENGE_TOKEN_BYTES, MAC_BYTES, UINT64_MAX, USER_DATA_BYTES
from netcode.transport.crypto import PacketKey, aead_decrypt, aead_encrypt, sequence_nonce

CHALLENGE_TOKEN_PLAINTEXT_BYTES = CHALLENGE_TOKEN_BYTES - MAC_BYTES  # 284
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class ChallengeToken:
    """What the server needs back from the client to finish the handshake."""

    client_id: int
    user_data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, int) or not 0 <= self.client_id <= UINT64_MAX:
            raise ValueError(f"client_id must be an unsigned 64-bit integer, got {self.client_id!r}")
        if len(self.user_data) != USER_DATA_BYTES:
            raise ValueError(f"user_data must be {USER_DATA_BYTES} bytes, got {len(self.user_data)}")

    def encode(self) -> bytes:
        """The 284-byte plaintext."""
        body = _U64.pack(self.client_id) + bytes(self.user_data)
        return body + bytes(CHALLENGE_TOKEN_PLAINTEXT_BYTES - len(body))


def encrypt_challenge_token(token: ChallengeToken, sequence: int, key: "bytes | PacketKey") -> bytes:
    """The 300-byte encrypted challenge token for challenge token sequence ``sequence``."""
    if not 0 <= sequence <= UINT64_MAX:
        raise ValueError(f"sequence must be an unsigned 64-bit integer, got {sequence!r}")
    return aead_encrypt(key, sequence_nonce(sequence), token.encode(), None)


def decrypt_challenge_token(data: bytes, sequence: int, key: "bytes | PacketKey") -> ChallengeToken | None:
    """Decrypt and parse an encrypted challenge token; None if it does not authenticate."""
    if len(data) != CHALLENGE_TOKEN_BYTES or not 0 <= sequence <= UINT64_MAX:
        return None
    plaintext = aead_decrypt(key, sequence_nonce(sequence), data, None)
    if plaintext is None:
        return None
    (client_id,) = _U64.unpack_from(plaintext, 0)
    return ChallengeToken(client_id, plaintext[8 : 8 + USER_DATA_BYTES])
