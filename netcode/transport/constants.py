"""Wire constants of the netcode 1.02 standard (mas-bandwidth/netcode, STANDARD.md).

Every size here is fixed by the standard or by the reference C implementation; changing one breaks
interoperability with C, C# and Unity peers.
"""

from enum import IntEnum

VERSION_INFO = b"NETCODE 1.02\x00"
"""13 bytes: ASCII version string with its null terminator, written in tokens and associated data."""
VERSION_INFO_BYTES = 13

KEY_BYTES = 32
"""ChaCha20-Poly1305 / XChaCha20-Poly1305 key size."""
MAC_BYTES = 16
"""Poly1305 tag appended to every ciphertext."""
CONNECT_TOKEN_NONCE_BYTES = 24
"""XChaCha20 nonce of the private connect token, random per token."""

CONNECT_TOKEN_BYTES = 2048
CONNECT_TOKEN_PRIVATE_BYTES = 1024
CHALLENGE_TOKEN_BYTES = 300
USER_DATA_BYTES = 256
MAX_SERVERS_PER_CONNECT = 32
MAX_PAYLOAD_BYTES = 1200

ADDRESS_IPV4 = 1
ADDRESS_IPV6 = 2

CONNECTION_REQUEST_BYTES = 1 + VERSION_INFO_BYTES + 8 + 8 + CONNECT_TOKEN_NONCE_BYTES + CONNECT_TOKEN_PRIVATE_BYTES
"""1078: prefix, version, protocol id, expire timestamp, token nonce, encrypted private token.

STANDARD.md still says 1062 (the 1.01 layout with an 8-byte sequence); the 1.02 reference code checks 1078.
"""

MIN_ENCRYPTED_PACKET_BYTES = 1 + 1 + MAC_BYTES
"""18: prefix byte, at least one sequence byte, MAC."""

MAX_PACKET_BYTES = 1 + 8 + MAX_PAYLOAD_BYTES + MAC_BYTES
"""1225: the largest valid datagram (a full payload packet with an 8-byte sequence)."""

REPLAY_PROTECTION_BUFFER_SIZE = 256

UINT64_MAX = (1 << 64) - 1


class PacketType(IntEnum):
    """Low 4 bits of the prefix byte."""

    CONNECTION_REQUEST = 0
    CONNECTION_DENIED = 1
    CONNECTION_CHALLENGE = 2
    CONNECTION_RESPONSE = 3
    CONNECTION_KEEP_ALIVE = 4
    CONNECTION_PAYLOAD = 5
    CONNECTION_DISCONNECT = 6


NUM_PACKET_TYPES = 7
