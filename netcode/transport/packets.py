"""Packet encoding and decoding (netcode 1.02): the seven packet types, byte for byte.

Connection request (type 0) is sent in the clear, 1078 bytes::

    0 (u8) | version info (13) | protocol id (u64) | connect token expire timestamp (u64)
    | connect token nonce (24) | encrypted private connect token (1024)

Every other packet is encrypted::

    prefix (u8) = (sequence bytes << 4) | type
    | sequence (1..8 bytes, least significant first, high zero bytes omitted)
    | ChaCha20-Poly1305 IETF ciphertext of the per-type data | MAC (16)

Per-type data: denied and disconnect: none; challenge and response: challenge token sequence (u64) +
encrypted challenge token (300); keep-alive: client index (u32) + max clients (u32); payload: 1..1200
bytes. Nonce: 4 zero bytes + sequence (u64 LE). Associated data: version info (13) | protocol id (u64)
| prefix byte.

``decode_packet`` never raises on untrusted input: it returns ``(packet, None)`` or ``(None, reason)``
so that endpoints can count drops by reason. Its checks follow STANDARD.md's "Reading Encrypted
Packets" and "Processing Connection Requests" order: cheap size and header checks first, replay check
before decryption, decryption last, and the replay window only advances for authenticated packets.
"""

import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

from netcode.transport.challenge_token import CHALLENGE_TOKEN_BYTES
from netcode.transport.connect_token import ConnectToken, ConnectTokenPrivate, decrypt_private_token
from netcode.transport.constants import (
    CONNECT_TOKEN_NONCE_BYTES,
    CONNECT_TOKEN_PRIVATE_BYTES,
    CONNECTION_REQUEST_BYTES,
    MAC_BYTES,
    MAX_PAYLOAD_BYTES,
    MIN_ENCRYPTED_PACKET_BYTES,
    NUM_PACKET_TYPES,
    UINT64_MAX,
    VERSION_INFO,
    VERSION_INFO_BYTES,
    PacketType,
)
from netcode.transport.crypto import PacketKey, as_packet_key
from netcode.transport.replay import ReplayProtection

_U64 = struct.Struct("<Q")
_KEEP_ALIVE = struct.Struct("<II")
_REQUEST_HEAD = struct.Struct("<QQ")  # protocol id, expire timestamp
_NONCE = struct.Struct("<4xQ")  # 4 zero bytes, then the sequence

# -- packet objects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionRequestPacket:
    """Client -> server, unencrypted; carries the encrypted private connect token."""

    protocol_id: int
    expire_timestamp: int
    nonce: bytes
    private_data: bytes
    token: ConnectTokenPrivate | None = field(default=None, compare=False)
    """The decrypted private token; set by ``decode_packet`` (which requires the server's private key)."""

    @classmethod
    def from_connect_token(cls, token: ConnectToken) -> "ConnectionRequestPacket":
        """The request a client sends for this token."""
        return cls(token.protocol_id, token.expire_timestamp, token.nonce, token.private_data)

    @property
    def token_mac(self) -> bytes:
        """MAC of the encrypted private token: the key of the server's token-reuse history."""
        return self.private_data[-MAC_BYTES:]


@dataclass(frozen=True, slots=True)
class ConnectionDeniedPacket:
    """Server -> client: the server is full."""

    sequence: int


@dataclass(frozen=True, slots=True)
class ConnectionChallengePacket:
    """Server -> client: an encrypted challenge token the client must echo back."""

    sequence: int
    challenge_token_sequence: int
    challenge_token_data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionResponsePacket:
    """Client -> server: the challenge token echoed back."""

    sequence: int
    challenge_token_sequence: int
    challenge_token_data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionKeepAlivePacket:
    """Either way: keeps the connection alive; from the server it also tells the client its slot."""

    sequence: int
    client_index: int
    max_clients: int


@dataclass(frozen=True, slots=True)
class ConnectionPayloadPacket:
    """Either way: 1..1200 bytes of application data."""

    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ConnectionDisconnectPacket:
    """Either way: the sender is disconnecting (sent several times, redundantly)."""

    sequence: int


EncryptedPacket = (
    ConnectionDeniedPacket
    | ConnectionChallengePacket
    | ConnectionResponsePacket
    | ConnectionKeepAlivePacket
    | ConnectionPayloadPacket
    | ConnectionDisconnectPacket
)
Packet = ConnectionRequestPacket | EncryptedPacket

_TYPE_OF: dict[type, PacketType] = {
    ConnectionRequestPacket: PacketType.CONNECTION_REQUEST,
    ConnectionDeniedPacket: PacketType.CONNECTION_DENIED,
    ConnectionChallengePacket: PacketType.CONNECTION_CHALLENGE,
    ConnectionResponsePacket: PacketType.CONNECTION_RESPONSE,
    ConnectionKeepAlivePacket: PacketType.CONNECTION_KEEP_ALIVE,
    ConnectionPayloadPacket: PacketType.CONNECTION_PAYLOAD,
    ConnectionDisconnectPacket: PacketType.CONNECTION_DISCONNECT,
}


def packet_type(packet: Packet) -> PacketType:
    """The wire type of a packet object."""
    return _TYPE_OF[type(packet)]


# Which packet types each role accepts (STANDARD.md: the server ignores challenges, the client
# ignores requests and responses). Endpoints may narrow these further by connection state.
SERVER_ALLOWED: frozenset[PacketType] = frozenset(
    {
        PacketType.CONNECTION_REQUEST,
        PacketType.CONNECTION_RESPONSE,
        PacketType.CONNECTION_KEEP_ALIVE,
        PacketType.CONNECTION_PAYLOAD,
        PacketType.CONNECTION_DISCONNECT,
    }
)
CLIENT_ALLOWED: frozenset[PacketType] = frozenset(
    {
        PacketType.CONNECTION_DENIED,
        PacketType.CONNECTION_CHALLENGE,
        PacketType.CONNECTION_KEEP_ALIVE,
        PacketType.CONNECTION_PAYLOAD,
        PacketType.CONNECTION_DISCONNECT,
    }
)

# -- sequence numbers --------------------------------------------------------------------------------


def sequence_bytes_required(sequence: int) -> int:
    """Bytes needed for a sequence with high zero bytes omitted (1..8; zero takes one byte)."""
    return max(1, (sequence.bit_length() + 7) >> 3)


def encode_sequence(sequence: int) -> bytes:
    """Variable-length sequence as written after the prefix byte (least significant byte first)."""
    if not 0 <= sequence <= UINT64_MAX:
        raise ValueError(f"sequence must be an unsigned 64-bit integer, got {sequence!r}")
    return sequence.to_bytes(sequence_bytes_required(sequence), "little")


_ASSOCIATED: dict[tuple[int, int], bytes] = {}  # (protocol id, prefix) -> associated data
_ASSOCIATED_LIMIT = 4096  # a process uses a few protocol ids times a few dozen prefixes


def associated_data(protocol_id: int, prefix_byte: int) -> bytes:
    """AEAD associated data of an encrypted packet: version info | protocol id (u64) | prefix byte.

    The same few values are needed for every packet, so they are built once and kept."""
    key = (protocol_id, prefix_byte)
    data = _ASSOCIATED.get(key)
    if data is None:
        data = VERSION_INFO + _U64.pack(protocol_id) + bytes((prefix_byte,))
        if len(_ASSOCIATED) >= _ASSOCIATED_LIMIT:
            _ASSOCIATED.clear()
        _ASSOCIATED[key] = data
    return data


# -- encoding ----------------------------------------------------------------------------------------


def encode_connection_request(packet: ConnectionRequestPacket) -> bytes:
    """The 1078-byte connection request."""
    if len(packet.nonce) != CONNECT_TOKEN_NONCE_BYTES:
        raise ValueError(f"nonce must be {CONNECT_TOKEN_NONCE_BYTES} bytes")
    if len(packet.private_data) != CONNECT_TOKEN_PRIVATE_BYTES:
        raise ValueError(f"private_data must be {CONNECT_TOKEN_PRIVATE_BYTES} bytes")
    return (
        b"\x00"
        + VERSION_INFO
        + _REQUEST_HEAD.pack(packet.protocol_id, packet.expire_timestamp)
        + bytes(packet.nonce)
        + bytes(packet.private_data)
    )


def _body(packet: EncryptedPacket) -> bytes:
    if isinstance(packet, ConnectionPayloadPacket):
        if not 1 <= len(packet.payload) <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload must be 1..{MAX_PAYLOAD_BYTES} bytes, got {len(packet.payload)}")
        return bytes(packet.payload)
    if isinstance(packet, ConnectionKeepAlivePacket):
        return _KEEP_ALIVE.pack(packet.client_index, packet.max_clients)
    if isinstance(packet, ConnectionChallengePacket | ConnectionResponsePacket):
        if len(packet.challenge_token_data) != CHALLENGE_TOKEN_BYTES:
            raise ValueError(f"challenge_token_data must be {CHALLENGE_TOKEN_BYTES} bytes")
        return _U64.pack(packet.challenge_token_sequence) + bytes(packet.challenge_token_data)
    if isinstance(packet, ConnectionDeniedPacket | ConnectionDisconnectPacket):
        return b""
    raise TypeError(f"not an encrypted packet: {packet!r}")


def _seal(kind: int, sequence: int, body: bytes, key: PacketKey, protocol_id: int) -> bytes:
    """prefix byte | variable-length sequence | ciphertext + MAC, for a checked body and protocol id."""
    if not 0 <= sequence <= UINT64_MAX:
        raise ValueError(f"sequence must be an unsigned 64-bit integer, got {sequence!r}")
    size = sequence_bytes_required(sequence)
    prefix = (size << 4) | kind
    ciphertext = key.encrypt(_NONCE.pack(sequence), body, associated_data(protocol_id, prefix))
    # The prefix byte and the little-endian sequence after it, in one conversion.
    return (prefix | (sequence << 8)).to_bytes(size + 1, "little") + ciphertext


def encode_packet(packet: Packet, key: "bytes | PacketKey | None" = None, protocol_id: int = 0) -> bytes:
    """Serialise (and, for types 1..6, encrypt) a packet.

    ``key`` is the sender's write key (client-to-server key on the client, server-to-client key on the
    server); the packet's own ``sequence`` is the nonce and must never repeat under one key.
    A connection request needs neither key nor protocol id (both are inside the packet).
    """
    if isinstance(packet, ConnectionRequestPacket):
        return encode_connection_request(packet)
    if key is None:
        raise ValueError("encrypted packets need a key")
    if not 0 <= protocol_id <= UINT64_MAX:
        raise ValueError(f"protocol_id must be an unsigned 64-bit integer, got {protocol_id!r}")
    body = _body(packet)
    return _seal(_TYPE_OF[type(packet)], packet.sequence, body, as_packet_key(key), protocol_id)


def encode_payload_packet(sequence: int, payload: bytes, key: PacketKey, protocol_id: int) -> bytes:
    """``encode_packet(ConnectionPayloadPacket(sequence, payload), key, protocol_id)`` without the packet object,
    for endpoints sending every payload (same checks, same bytes)."""
    if not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD_BYTES} bytes, got {len(payload)}")
    if not 0 <= protocol_id <= UINT64_MAX:
        raise ValueError(f"protocol_id must be an unsigned 64-bit integer, got {protocol_id!r}")
    return _seal(PacketType.CONNECTION_PAYLOAD, sequence, bytes(payload), key, protocol_id)


# -- decoding ----------------------------------------------------------------------------------------


class DropReason(StrEnum):
    """Why ``decode_packet`` ignored a datagram (for per-reason counters)."""

    TOO_SMALL = "too_small"
    BAD_PACKET_TYPE = "bad_packet_type"
    TYPE_NOT_ALLOWED = "type_not_allowed"
    REQUEST_BAD_SIZE = "request_bad_size"
    NO_PRIVATE_KEY = "no_private_key"
    BAD_VERSION = "bad_version"
    WRONG_PROTOCOL_ID = "wrong_protocol_id"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_INVALID = "token_invalid"
    BAD_SEQUENCE_BYTES = "bad_sequence_bytes"
    BAD_SIZE = "bad_size"
    NO_KEY = "no_key"
    REPLAYED = "replayed"
    DECRYPT_FAILED = "decrypt_failed"


# Expected per-type data size (plaintext, without MAC) as (min, max).
_BODY_SIZE = {
    PacketType.CONNECTION_DENIED: (0, 0),
    PacketType.CONNECTION_CHALLENGE: (8 + CHALLENGE_TOKEN_BYTES, 8 + CHALLENGE_TOKEN_BYTES),
    PacketType.CONNECTION_RESPONSE: (8 + CHALLENGE_TOKEN_BYTES, 8 + CHALLENGE_TOKEN_BYTES),
    PacketType.CONNECTION_KEEP_ALIVE: (8, 8),
    PacketType.CONNECTION_PAYLOAD: (1, MAX_PAYLOAD_BYTES),
    PacketType.CONNECTION_DISCONNECT: (0, 0),
}
# The PacketType of each low nibble below NUM_PACKET_TYPES (a tuple index; calling the enum costs more).
_KINDS = tuple(PacketType(kind) for kind in range(NUM_PACKET_TYPES))
_REPLAY_PROTECTED = frozenset(
    {PacketType.CONNECTION_KEEP_ALIVE, PacketType.CONNECTION_PAYLOAD, PacketType.CONNECTION_DISCONNECT}
)

DecodeResult = tuple[Packet, None] | tuple[None, DropReason]


def _decode_request(
    data: bytes, protocol_id: int, private_key: bytes | None, now: int
) -> tuple[ConnectionRequestPacket, None] | tuple[None, DropReason]:
    if len(data) != CONNECTION_REQUEST_BYTES:
        return None, DropReason.REQUEST_BAD_SIZE
    if private_key is None:
        return None, DropReason.NO_PRIVATE_KEY
    if data[1 : 1 + VERSION_INFO_BYTES] != VERSION_INFO:
        return None, DropReason.BAD_VERSION
    offset = 1 + VERSION_INFO_BYTES
    packet_protocol_id, expire = _REQUEST_HEAD.unpack_from(data, offset)
    if packet_protocol_id != protocol_id:
        return None, DropReason.WRONG_PROTOCOL_ID
    if expire <= now:
        return None, DropReason.TOKEN_EXPIRED
    offset += _REQUEST_HEAD.size
    nonce = data[offset : offset + CONNECT_TOKEN_NONCE_BYTES]
    private_data = data[offset + CONNECT_TOKEN_NONCE_BYTES :]
    token = decrypt_private_token(private_data, protocol_id, expire, nonce, private_key)
    if token is None:
        return None, DropReason.TOKEN_INVALID
    return ConnectionRequestPacket(packet_protocol_id, expire, nonce, private_data, token), None


def decode_packet(
    data: bytes,
    *,
    protocol_id: int,
    allowed: Collection[PacketType],
    key: "bytes | PacketKey | None" = None,
    replay: ReplayProtection | None = None,
    private_key: bytes | None = None,
    now: int = 0,
) -> DecodeResult:
    """Parse, check and decrypt one datagram; never raises on untrusted ``data``.

    * ``protocol_id``: this application's protocol id (checked directly in requests, through the
      associated data in encrypted packets).
    * ``allowed``: packet types acceptable here (``SERVER_ALLOWED``, ``CLIENT_ALLOWED`` or narrower).
    * ``key``: the read key for the sender's address (None if the address is unknown).
    * ``replay``: the connection's replay window; checked and advanced for keep-alive, payload and
      disconnect packets.
    * ``private_key`` and ``now`` (unix seconds): needed for connection requests, whose private token is
      decrypted and parsed here (``packet.token``); a token with expire timestamp <= now is dropped.

    Returns ``(packet, None)`` or ``(None, DropReason)``.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            return None, DropReason.TOO_SMALL
        data = bytes(data)
    size = len(data)
    if size < 1:
        return None, DropReason.TOO_SMALL
    prefix = data[0]
    if prefix == 0:
        if PacketType.CONNECTION_REQUEST not in allowed:
            return None, DropReason.TYPE_NOT_ALLOWED
        return _decode_request(data, protocol_id, private_key, now)

    if size < MIN_ENCRYPTED_PACKET_BYTES:
        return None, DropReason.TOO_SMALL
    kind = prefix & 0x0F
    if kind == PacketType.CONNECTION_REQUEST or kind >= NUM_PACKET_TYPES:
        # A request always has the whole prefix byte zero; a non-zero prefix with type 0 is garbage.
        return None, DropReason.BAD_PACKET_TYPE
    kind = _KINDS[kind]
    if kind not in allowed:
        return None, DropReason.TYPE_NOT_ALLOWED
    sequence_bytes = prefix >> 4
    if not 1 <= sequence_bytes <= 8:
        return None, DropReason.BAD_SEQUENCE_BYTES
    header = 1 + sequence_bytes
    if size < header + MAC_BYTES:
        return None, DropReason.TOO_SMALL
    body_size = size - header - MAC_BYTES
    low, high = _BODY_SIZE[kind]
    if not low <= body_size <= high:
        return None, DropReason.BAD_SIZE
    if key is None:
        return None, DropReason.NO_KEY
    sequence = int.from_bytes(data[1:header], "little")
    protected = replay is not None and kind in _REPLAY_PROTECTED
    if protected and replay.already_received(sequence):
        return None, DropReason.REPLAYED
    try:
        cipher = key if type(key) is PacketKey else as_packet_key(key)
    except (TypeError, ValueError):
        return None, DropReason.NO_KEY
    body = cipher.decrypt(_NONCE.pack(sequence), data[header:], associated_data(protocol_id, prefix))
    if body is None:
        return None, DropReason.DECRYPT_FAILED
    if protected:
        replay.advance(sequence)

    if kind == PacketType.CONNECTION_PAYLOAD:
        return ConnectionPayloadPacket(sequence, body), None
    if kind == PacketType.CONNECTION_KEEP_ALIVE:
        client_index, max_clients = _KEEP_ALIVE.unpack(body)
        return ConnectionKeepAlivePacket(sequence, client_index, max_clients), None
    if kind == PacketType.CONNECTION_CHALLENGE:
        return ConnectionChallengePacket(sequence, _U64.unpack_from(body)[0], body[8:]), None
    if kind == PacketType.CONNECTION_RESPONSE:
        return ConnectionResponsePacket(sequence, _U64.unpack_from(body)[0], body[8:]), None
    if kind == PacketType.CONNECTION_DENIED:
        return ConnectionDeniedPacket(sequence), None
    return ConnectionDisconnectPacket(sequence), None
