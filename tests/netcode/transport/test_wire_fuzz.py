"""Property tests: random and mutated datagrams never raise out of the decoders, and never pass."""

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.transport.connect_token import ConnectToken, ConnectTokenError, generate_connect_token
from netcode.transport.constants import PacketType
from netcode.transport.packets import (
    ConnectionChallengePacket,
    ConnectionDeniedPacket,
    ConnectionDisconnectPacket,
    ConnectionKeepAlivePacket,
    ConnectionPayloadPacket,
    ConnectionRequestPacket,
    ConnectionResponsePacket,
    decode_packet,
    encode_packet,
)
from netcode.transport.replay import ReplayProtection

from .wire_helpers import C2S_KEY, CREATE, PRIVATE_KEY, PROTOCOL_ID

ALL = frozenset(PacketType)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN = generate_connect_token(
    private_key=PRIVATE_KEY,
    protocol_id=PROTOCOL_ID,
    client_id=9,
    server_addresses=["127.0.0.1:40000", "[::1]:40000"],
    expire_seconds=60,
    timeout_seconds=5,
    create_timestamp=CREATE,
    client_to_server_key=C2S_KEY,
)
VALID = [
    encode_packet(ConnectionRequestPacket.from_connect_token(TOKEN)),
    encode_packet(ConnectionDeniedPacket(1), C2S_KEY, PROTOCOL_ID),
    encode_packet(ConnectionChallengePacket(2, 3, bytes(300)), C2S_KEY, PROTOCOL_ID),
    encode_packet(ConnectionResponsePacket(300, 4, bytes(range(256)) + bytes(44)), C2S_KEY, PROTOCOL_ID),
    encode_packet(ConnectionKeepAlivePacket(70000, 1, 2), C2S_KEY, PROTOCOL_ID),
    encode_packet(ConnectionPayloadPacket(1 << 40, b"payload" * 20), C2S_KEY, PROTOCOL_ID),
    encode_packet(ConnectionDisconnectPacket(1 << 63), C2S_KEY, PROTOCOL_ID),
]


def decode(data: bytes):
    return decode_packet(
        data,
        protocol_id=PROTOCOL_ID,
        allowed=ALL,
        key=C2S_KEY,
        replay=ReplayProtection(),
        private_key=PRIVATE_KEY,
        now=CREATE,
    )


def test_valid_corpus_decodes():
    for wire in VALID:
        packet, reason = decode(wire)
        assert reason is None and packet is not None


@FAST
@given(st.binary(max_size=1400))
def test_random_bytes_never_raise(data):
    packet, reason = decode(data)
    assert (packet is None) != (reason is None)
    assert packet is None  # forging a packet at random is not expected


@FAST
@given(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=1300))
def test_random_prefixes_never_raise(kind, sequence_bytes, rest):
    packet, reason = decode(bytes(((sequence_bytes << 4) | kind,)) + rest)
    assert packet is None and reason is not None


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.just(0)),
)


def mutate(wire: bytes, mutation: tuple[str, int, int]) -> bytes:
    how, position, value = mutation
    index = position % len(wire)
    if how == "flip":
        return wire[:index] + bytes((wire[index] ^ value,)) + wire[index + 1 :]
    if how == "truncate":
        return wire[:index]
    if how == "append":
        return wire + bytes((value,)) * position
    if how == "insert":
        return wire[:index] + bytes((value,)) + wire[index:]
    return wire[:index] + wire[index + 1 :]


@FAST
@given(st.sampled_from(VALID), MUTATION)
def test_mutated_valid_packets_are_always_dropped(wire, mutation):
    """Every byte of every packet type is authenticated (or is a checked length): any change drops it."""
    packet, reason = decode(mutate(wire, mutation))
    assert packet is None and reason is not None


@FAST
@given(st.binary(min_size=2048, max_size=2048) | st.binary(max_size=2100))
def test_connect_token_decode_raises_only_connect_token_error(data):
    with contextlib.suppress(ConnectTokenError):
        ConnectToken.decode(data)


TOKEN_BYTES = TOKEN.encode()


@FAST
@given(MUTATION)
def test_mutated_connect_token_raises_only_connect_token_error(mutation):
    with contextlib.suppress(ConnectTokenError):
        ConnectToken.decode(mutate(TOKEN_BYTES, mutation))
