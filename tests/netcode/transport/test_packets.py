"""Packets: exact byte layout of all seven types, sequence numbers, and every drop reason in order."""

import time

import pytest

from netcode.transport.connect_token import generate_connect_token
from netcode.transport.constants import UINT64_MAX, PacketType
from netcode.transport.crypto import PacketKey
from netcode.transport.packets import (
    CLIENT_ALLOWED,
    SERVER_ALLOWED,
    ConnectionChallengePacket,
    ConnectionDeniedPacket,
    ConnectionDisconnectPacket,
    ConnectionKeepAlivePacket,
    ConnectionPayloadPacket,
    ConnectionRequestPacket,
    ConnectionResponsePacket,
    DropReason,
    decode_packet,
    encode_packet,
    encode_payload_packet,
    encode_sequence,
    packet_type,
    sequence_bytes_required,
)
from netcode.transport.replay import ReplayProtection

from .wire_helpers import (
    C2S_KEY,
    CLIENT_ID,
    CREATE,
    PRIVATE_KEY,
    PROTOCOL_ID,
    S2C_KEY,
    TOKEN_NONCE,
    USER_DATA,
    VERSION,
    chacha_encrypt,
    packet_ad,
    u8,
    u32,
    u64,
)

ALL = frozenset(PacketType)
CHALLENGE_DATA = bytes(range(256)) + bytes(range(44))  # 300 opaque bytes

# -- sequence numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sequence, encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (0xFF, b"\xff"),
        (0x100, b"\x00\x01"),
        (1000, b"\xe8\x03"),  # STANDARD.md's example: 0x3E8 -> E8,03 with 2 in the prefix's high nibble
        (0xFFFF, b"\xff\xff"),
        (0x10000, b"\x00\x00\x01"),
        ((1 << 56) - 1, b"\xff" * 7),
        (1 << 56, b"\x00" * 7 + b"\x01"),
        (UINT64_MAX, b"\xff" * 8),
    ],
)
def test_sequence_encoding(sequence, encoded):
    assert encode_sequence(sequence) == encoded
    assert sequence_bytes_required(sequence) == len(encoded)
    wire = encode_packet(ConnectionDisconnectPacket(sequence), C2S_KEY, PROTOCOL_ID)
    assert wire[0] == (len(encoded) << 4) | 6
    assert wire[1 : 1 + len(encoded)] == encoded
    assert decode_packet(wire, protocol_id=PROTOCOL_ID, allowed=ALL, key=C2S_KEY) == (
        ConnectionDisconnectPacket(sequence),
        None,
    )


@pytest.mark.parametrize("sequence", [-1, 1 << 64])
def test_sequence_out_of_range_is_refused(sequence):
    with pytest.raises(ValueError):
        encode_sequence(sequence)


# -- exact layouts ---------------------------------------------------------------------------------

ENCRYPTED_CASES = [
    (ConnectionDeniedPacket(0), 1, b""),
    (ConnectionChallengePacket(7, 0x0A0B0C0D, CHALLENGE_DATA), 2, u64(0x0A0B0C0D) + CHALLENGE_DATA),
    (ConnectionResponsePacket(300, 99, CHALLENGE_DATA), 3, u64(99) + CHALLENGE_DATA),
    (ConnectionKeepAlivePacket(1000, 3, 64), 4, u32(3) + u32(64)),
    (ConnectionPayloadPacket(0x0123456789, b"hello"), 5, b"hello"),
    (ConnectionPayloadPacket(UINT64_MAX, bytes(1200)), 5, bytes(1200)),
    (ConnectionDisconnectPacket(0x10000), 6, b""),
]


@pytest.mark.parametrize("packet, kind, body", ENCRYPTED_CASES)
def test_encrypted_packet_layout(packet, kind, body):
    sequence_bytes = encode_sequence(packet.sequence)
    prefix = (len(sequence_bytes) << 4) | kind
    expected = (
        u8(prefix) + sequence_bytes + chacha_encrypt(S2C_KEY, packet.sequence, body, packet_ad(PROTOCOL_ID, prefix))
    )
    assert encode_packet(packet, S2C_KEY, PROTOCOL_ID) == expected
    assert encode_packet(packet, PacketKey(S2C_KEY), PROTOCOL_ID) == expected
    assert packet_type(packet) == kind
    assert len(expected) == 1 + len(sequence_bytes) + len(body) + 16


@pytest.mark.parametrize("packet, kind, body", ENCRYPTED_CASES)
def test_encrypted_packet_round_trip_and_tamper(packet, kind, body):
    wire = encode_packet(packet, S2C_KEY, PROTOCOL_ID)
    assert decode_packet(wire, protocol_id=PROTOCOL_ID, allowed=ALL, key=S2C_KEY) == (packet, None)
    step = max(1, len(wire) // 64)  # every byte for small packets, a spread for the 1,200-byte one
    for index in [*range(0, len(wire), step), len(wire) - 1]:
        mutated = bytearray(wire)
        mutated[index] ^= 0x80
        result, reason = decode_packet(bytes(mutated), protocol_id=PROTOCOL_ID, allowed=ALL, key=S2C_KEY)
        assert result is None and reason is not None, index


def test_wrong_key_or_protocol_id_fails_to_decrypt():
    wire = encode_packet(ConnectionKeepAlivePacket(5, 0, 8), C2S_KEY, PROTOCOL_ID)
    assert decode_packet(wire, protocol_id=PROTOCOL_ID, allowed=ALL, key=S2C_KEY) == (None, DropReason.DECRYPT_FAILED)
    assert decode_packet(wire, protocol_id=PROTOCOL_ID + 1, allowed=ALL, key=C2S_KEY) == (
        None,
        DropReason.DECRYPT_FAILED,
    )


def test_prefix_byte_is_authenticated():
    """Re-labelling a keep-alive as a payload (same size range) must fail: the prefix is in the AD."""
    wire = bytearray(encode_packet(ConnectionKeepAlivePacket(5, 0, 8), C2S_KEY, PROTOCOL_ID))
    wire[0] = (wire[0] & 0xF0) | 5
    assert decode_packet(bytes(wire), protocol_id=PROTOCOL_ID, allowed=ALL, key=C2S_KEY) == (
        None,
        DropReason.DECRYPT_FAILED,
    )


@pytest.mark.parametrize("sequence", [0, 1, 255, 256, 0x0123456789, 1 << 63, UINT64_MAX])
def test_payload_fast_path_writes_the_same_bytes(sequence):
    """Endpoints encode payloads without a packet object: byte for byte what encode_packet writes."""
    for payload in (b"x", bytes(range(256)) * 4, bytes(1200)):
        expected = encode_packet(ConnectionPayloadPacket(sequence, payload), S2C_KEY, PROTOCOL_ID)
        assert encode_payload_packet(sequence, payload, PacketKey(S2C_KEY), PROTOCOL_ID) == expected
        assert encode_payload_packet(sequence, bytearray(payload), PacketKey(S2C_KEY), PROTOCOL_ID) == expected


def test_payload_fast_path_refuses_what_encode_packet_refuses():
    key = PacketKey(C2S_KEY)
    for payload in (b"", bytes(1201)):
        with pytest.raises(ValueError):
            encode_payload_packet(1, payload, key, PROTOCOL_ID)
    for sequence in (-1, UINT64_MAX + 1):
        with pytest.raises(ValueError):
            encode_payload_packet(sequence, b"x", key, PROTOCOL_ID)
    with pytest.raises(ValueError):
        encode_payload_packet(1, b"x", key, UINT64_MAX + 1)


def test_payload_size_limits_at_encode():
    for payload in (b"", bytes(1201)):
        with pytest.raises(ValueError):
            encode_packet(ConnectionPayloadPacket(1, payload), C2S_KEY, PROTOCOL_ID)
    with pytest.raises(ValueError):
        encode_packet(ConnectionChallengePacket(1, 1, bytes(299)), C2S_KEY, PROTOCOL_ID)
    with pytest.raises(ValueError):
        encode_packet(ConnectionDisconnectPacket(1), None, PROTOCOL_ID)


# -- connection request ----------------------------------------------------------------------------


def make_token(expire_seconds: int = 30):
    return generate_connect_token(
        private_key=PRIVATE_KEY,
        protocol_id=PROTOCOL_ID,
        client_id=CLIENT_ID,
        server_addresses=["127.0.0.1:40000"],
        expire_seconds=expire_seconds,
        timeout_seconds=5,
        user_data=USER_DATA,
        create_timestamp=CREATE,
        nonce=TOKEN_NONCE,
        client_to_server_key=C2S_KEY,
        server_to_client_key=S2C_KEY,
    )


TOKEN = make_token()
REQUEST = encode_packet(ConnectionRequestPacket.from_connect_token(TOKEN))
NOW = CREATE + 1


def server_decode(data: bytes, **overrides):
    args = dict(protocol_id=PROTOCOL_ID, allowed=SERVER_ALLOWED, private_key=PRIVATE_KEY, now=NOW) | overrides
    return decode_packet(data, **args)


def test_connection_request_layout():
    expected = u8(0) + VERSION + u64(PROTOCOL_ID) + u64(CREATE + 30) + TOKEN_NONCE + TOKEN.private_data
    assert expected == REQUEST
    assert len(REQUEST) == 1078


def test_connection_request_decodes_and_opens_the_private_token():
    packet, reason = server_decode(REQUEST)
    assert reason is None
    assert packet == ConnectionRequestPacket.from_connect_token(TOKEN)
    assert packet.token.client_id == CLIENT_ID
    assert packet.token.user_data == USER_DATA
    assert packet.token.client_to_server_key == C2S_KEY
    assert packet.token_mac == TOKEN.private_data[-16:]


def _patch(offset: int, value: bytes) -> bytes:
    return REQUEST[:offset] + value + REQUEST[offset + len(value) :]


@pytest.mark.parametrize(
    "data, overrides, reason",
    [
        (REQUEST, dict(allowed=CLIENT_ALLOWED), DropReason.TYPE_NOT_ALLOWED),
        (REQUEST[:-1], {}, DropReason.REQUEST_BAD_SIZE),
        (REQUEST + b"\x00", {}, DropReason.REQUEST_BAD_SIZE),
        (REQUEST, dict(private_key=None), DropReason.NO_PRIVATE_KEY),
        (_patch(1, b"NETCODE 1.01\x00"), {}, DropReason.BAD_VERSION),
        (REQUEST, dict(protocol_id=PROTOCOL_ID + 1), DropReason.WRONG_PROTOCOL_ID),
        (REQUEST, dict(now=CREATE + 30), DropReason.TOKEN_EXPIRED),  # expire <= now
        (REQUEST, dict(now=int(time.time()) + 10**9), DropReason.TOKEN_EXPIRED),
        (REQUEST, dict(private_key=bytes(32)), DropReason.TOKEN_INVALID),
        (_patch(1 + 13 + 8, u64(CREATE + 31)), {}, DropReason.TOKEN_INVALID),  # expire is in the AD
        (_patch(1 + 13 + 16, bytes(24)), {}, DropReason.TOKEN_INVALID),  # nonce
        (_patch(1077, b"\x00"), {}, DropReason.TOKEN_INVALID),  # MAC
    ],
)
def test_connection_request_drops(data, overrides, reason):
    assert server_decode(data, **overrides) == (None, reason)


def test_connection_request_just_before_expiry_is_accepted():
    assert server_decode(REQUEST, now=CREATE + 29)[1] is None


# -- encrypted packet drop reasons, in the standard's order -----------------------------------------


def raw(prefix: int, sequence: bytes, body: bytes, key: bytes = C2S_KEY, seq: int = 0) -> bytes:
    """Hand-made packet: any prefix and body, properly encrypted, for size checks the encoder refuses."""
    return u8(prefix) + sequence + chacha_encrypt(key, seq, body, packet_ad(PROTOCOL_ID, prefix))


@pytest.mark.parametrize(
    "data, overrides, reason",
    [
        (b"", {}, DropReason.TOO_SMALL),
        (b"\x15" + bytes(16), {}, DropReason.TOO_SMALL),  # 17 bytes < 18
        (b"\x17" + bytes(17), {}, DropReason.BAD_PACKET_TYPE),
        (b"\x1f" + bytes(17), {}, DropReason.BAD_PACKET_TYPE),
        (b"\x10" + bytes(17), {}, DropReason.BAD_PACKET_TYPE),  # type 0 with a non-zero prefix
        (raw(0x12, b"\x00", u64(1) + CHALLENGE_DATA), {}, DropReason.TYPE_NOT_ALLOWED),  # server ignores challenges
        (raw(0x13, b"\x00", u64(1) + CHALLENGE_DATA), dict(allowed=CLIENT_ALLOWED), DropReason.TYPE_NOT_ALLOWED),
        (b"\x05" + bytes(20), {}, DropReason.BAD_SEQUENCE_BYTES),
        (b"\x95" + bytes(30), {}, DropReason.BAD_SEQUENCE_BYTES),
        (b"\xf5" + bytes(30), {}, DropReason.BAD_SEQUENCE_BYTES),
        (b"\x85" + bytes(20), {}, DropReason.TOO_SMALL),  # 21 < 1 + 8 + 16
        (raw(0x14, b"\x00", bytes(9)), {}, DropReason.BAD_SIZE),  # keep-alive carries exactly 8
        (raw(0x14, b"\x00", bytes(7)), {}, DropReason.BAD_SIZE),
        (raw(0x16, b"\x00", b"\x00"), {}, DropReason.BAD_SIZE),  # disconnect carries nothing
        (raw(0x13, b"\x00", u64(1) + CHALLENGE_DATA[:-1]), {}, DropReason.BAD_SIZE),
        (raw(0x15, b"\x00", b""), {}, DropReason.BAD_SIZE),  # empty payload
        (raw(0x15, b"\x00", bytes(1201)), {}, DropReason.BAD_SIZE),  # oversized payload
        (raw(0x15, b"\x00", b"x"), dict(key=None), DropReason.NO_KEY),
        (raw(0x15, b"\x00", b"x", key=S2C_KEY), {}, DropReason.DECRYPT_FAILED),
    ],
)
def test_encrypted_packet_drops(data, overrides, reason):
    args = dict(protocol_id=PROTOCOL_ID, allowed=SERVER_ALLOWED, key=C2S_KEY) | overrides
    assert decode_packet(data, **args) == (None, reason)


def test_hand_made_valid_packet_is_accepted():
    data = raw(0x15, b"\x00", b"x")
    assert decode_packet(data, protocol_id=PROTOCOL_ID, allowed=SERVER_ALLOWED, key=C2S_KEY) == (
        ConnectionPayloadPacket(0, b"x"),
        None,
    )


# -- replay protection through the decoder ---------------------------------------------------------


def decode_with(replay: ReplayProtection, wire: bytes):
    return decode_packet(wire, protocol_id=PROTOCOL_ID, allowed=ALL, key=C2S_KEY, replay=replay)


@pytest.mark.parametrize(
    "packet",
    [ConnectionKeepAlivePacket(9, 0, 4), ConnectionPayloadPacket(9, b"p"), ConnectionDisconnectPacket(9)],
)
def test_replayed_packets_are_dropped(packet):
    replay = ReplayProtection()
    wire = encode_packet(packet, C2S_KEY, PROTOCOL_ID)
    assert decode_with(replay, wire) == (packet, None)
    assert decode_with(replay, wire) == (None, DropReason.REPLAYED)


@pytest.mark.parametrize(
    "packet",
    [
        ConnectionDeniedPacket(9),
        ConnectionChallengePacket(9, 1, CHALLENGE_DATA),
        ConnectionResponsePacket(9, 1, CHALLENGE_DATA),
    ],
)
def test_handshake_packets_are_not_replay_protected(packet):
    """STANDARD.md applies replay protection to keep-alive, payload and disconnect only."""
    replay = ReplayProtection()
    wire = encode_packet(packet, C2S_KEY, PROTOCOL_ID)
    assert decode_with(replay, wire) == (packet, None)
    assert decode_with(replay, wire) == (packet, None)
    assert replay.most_recent_sequence == 0


def test_forged_far_future_packet_does_not_move_the_window():
    replay = ReplayProtection()
    forged = encode_packet(ConnectionPayloadPacket(10**9, b"x"), S2C_KEY, PROTOCOL_ID)  # wrong key
    assert decode_with(replay, forged) == (None, DropReason.DECRYPT_FAILED)
    assert replay.most_recent_sequence == 0
    genuine = encode_packet(ConnectionPayloadPacket(1, b"y"), C2S_KEY, PROTOCOL_ID)
    assert decode_with(replay, genuine)[1] is None


def test_old_packet_outside_the_window_is_dropped():
    replay = ReplayProtection()
    assert decode_with(replay, encode_packet(ConnectionPayloadPacket(300, b"a"), C2S_KEY, PROTOCOL_ID))[1] is None
    assert decode_with(replay, encode_packet(ConnectionPayloadPacket(44, b"b"), C2S_KEY, PROTOCOL_ID)) == (
        None,
        DropReason.REPLAYED,
    )
    assert decode_with(replay, encode_packet(ConnectionPayloadPacket(45, b"c"), C2S_KEY, PROTOCOL_ID))[1] is None


def test_decode_accepts_bytes_like_and_rejects_non_bytes():
    wire = encode_packet(ConnectionPayloadPacket(3, b"m"), C2S_KEY, PROTOCOL_ID)
    for form in (bytearray(wire), memoryview(wire)):
        assert decode_packet(form, protocol_id=PROTOCOL_ID, allowed=ALL, key=C2S_KEY)[1] is None
    assert decode_packet(None, protocol_id=PROTOCOL_ID, allowed=ALL, key=C2S_KEY)[0] is None  # type: ignore[arg-type]
    assert decode_packet(wire, protocol_id=PROTOCOL_ID, allowed=ALL, key=b"short") == (None, DropReason.NO_KEY)
