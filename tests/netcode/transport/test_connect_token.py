"""Connect token: exact byte layout (public and private parts), validation, server-side decryption."""

import hashlib
from ipaddress import IPv4Address

import pytest

from netcode.transport.address import Address
from netcode.transport.connect_token import (
    ConnectToken,
    ConnectTokenError,
    ConnectTokenPrivate,
    decrypt_private_token,
    generate_connect_token,
)
from netcode.transport.constants import UINT64_MAX

from .wire_helpers import (
    C2S_KEY,
    CLIENT_ID,
    CREATE,
    EXPIRE_SECONDS,
    IPV4_127_0_0_1_40000,
    IPV6_2001_DB8__1_40001,
    PRIVATE_KEY,
    PROTOCOL_ID,
    S2C_KEY,
    TIMEOUT,
    TOKEN_NONCE,
    USER_DATA,
    VERSION,
    i32,
    u32,
    u64,
    xchacha_encrypt,
)

EXPIRE = CREATE + EXPIRE_SECONDS
ADDRESSES = ["127.0.0.1:40000", "[2001:db8::1]:40001"]


def make_token(**overrides) -> ConnectToken:
    args = dict(
        private_key=PRIVATE_KEY,
        protocol_id=PROTOCOL_ID,
        client_id=CLIENT_ID,
        server_addresses=ADDRESSES,
        expire_seconds=EXPIRE_SECONDS,
        timeout_seconds=TIMEOUT,
        user_data=USER_DATA,
        create_timestamp=CREATE,
        nonce=TOKEN_NONCE,
        client_to_server_key=C2S_KEY,
        server_to_client_key=S2C_KEY,
    )
    args.update(overrides)
    return generate_connect_token(**args)


def expected_private_plaintext() -> bytes:
    body = (
        u64(CLIENT_ID)
        + i32(TIMEOUT)
        + u32(2)
        + IPV4_127_0_0_1_40000
        + IPV6_2001_DB8__1_40001
        + C2S_KEY
        + S2C_KEY
        + USER_DATA
    )
    return body + bytes(1008 - len(body))


def expected_token_bytes() -> bytes:
    ad = VERSION + u64(PROTOCOL_ID) + u64(EXPIRE)
    private = xchacha_encrypt(PRIVATE_KEY, TOKEN_NONCE, expected_private_plaintext(), ad)
    assert len(private) == 1024
    body = (
        VERSION
        + u64(PROTOCOL_ID)
        + u64(CREATE)
        + u64(EXPIRE)
        + TOKEN_NONCE
        + private
        + i32(TIMEOUT)
        + u32(2)
        + IPV4_127_0_0_1_40000
        + IPV6_2001_DB8__1_40001
        + C2S_KEY
        + S2C_KEY
    )
    return body + bytes(2048 - len(body))


def test_token_bytes_match_the_standard_layout():
    data = make_token().encode()
    assert len(data) == 2048
    assert data == expected_token_bytes()


def test_token_golden_digest():
    """Pins the exact bytes against accidental change (the layout test above explains them)."""
    digest = hashlib.sha256(make_token().encode()).hexdigest()
    assert digest == hashlib.sha256(expected_token_bytes()).hexdigest()
    assert digest == GOLDEN_TOKEN_SHA256


GOLDEN_TOKEN_SHA256 = "bffc90185d405581eb07f6881fcc3e739908f703d77c3efc337b6f478dcef8d4"


def test_public_token_round_trip():
    token = make_token()
    parsed = ConnectToken.decode(token.encode())
    assert parsed == token
    assert parsed.server_addresses == (
        Address(IPv4Address("127.0.0.1"), 40000),
        Address.parse("[2001:db8::1]:40001"),
    )
    assert parsed.private_mac == token.private_data[-16:]


def test_server_decrypts_private_token():
    token = make_token()
    private = decrypt_private_token(token.private_data, PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY)
    assert private == ConnectTokenPrivate(
        client_id=CLIENT_ID,
        timeout_seconds=TIMEOUT,
        server_addresses=token.server_addresses,
        client_to_server_key=C2S_KEY,
        server_to_client_key=S2C_KEY,
        user_data=USER_DATA,
    )


@pytest.mark.parametrize(
    "change",
    [
        dict(private_key=bytes(32)),
        dict(protocol_id=PROTOCOL_ID + 1),
        dict(expire_timestamp=EXPIRE + 1),
        dict(nonce=bytes(24)),
    ],
)
def test_private_token_rejects_wrong_key_or_associated_data(change):
    token = make_token()
    args = dict(protocol_id=PROTOCOL_ID, expire_timestamp=EXPIRE, nonce=TOKEN_NONCE, private_key=PRIVATE_KEY) | change
    assert decrypt_private_token(token.private_data, **args) is None


def test_private_token_rejects_any_flipped_byte():
    data = make_token().private_data
    for index in range(len(data)):
        mutated = bytearray(data)
        mutated[index] ^= 0x01
        assert decrypt_private_token(bytes(mutated), PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY) is None, index


def test_private_token_wrong_sizes_return_none():
    data = make_token().private_data
    assert decrypt_private_token(data[:-1], PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY) is None
    assert decrypt_private_token(data + b"\x00", PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY) is None
    assert decrypt_private_token(data, PROTOCOL_ID, EXPIRE, TOKEN_NONCE[:-1], PRIVATE_KEY) is None
    assert decrypt_private_token(data, PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY[:-1]) is None


def test_private_token_that_authenticates_but_is_malformed_returns_none():
    ad = VERSION + u64(PROTOCOL_ID) + u64(EXPIRE)
    bad_count = u64(CLIENT_ID) + i32(TIMEOUT) + u32(0)
    bad_type = u64(CLIENT_ID) + i32(TIMEOUT) + u32(1) + b"\x03" + bytes(6)
    for body in (bad_count, bad_type):
        encrypted = xchacha_encrypt(PRIVATE_KEY, TOKEN_NONCE, body + bytes(1008 - len(body)), ad)
        assert decrypt_private_token(encrypted, PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY) is None


def test_internal_addresses_go_in_the_private_part():
    token = make_token(internal_server_addresses=["127.0.0.5:50000", "127.0.0.6:50001"])
    private = decrypt_private_token(token.private_data, PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY)
    assert [str(a) for a in private.server_addresses] == ["127.0.0.5:50000", "127.0.0.6:50001"]
    assert [str(a) for a in token.server_addresses] == ADDRESSES


def test_short_user_data_is_zero_padded_and_defaults_are_random():
    token = generate_connect_token(
        private_key=PRIVATE_KEY,
        protocol_id=PROTOCOL_ID,
        client_id=1,
        server_addresses=[("127.0.0.1", 40000)],
        expire_seconds=30,
        timeout_seconds=5,
        user_data=b"role=mentor",
    )
    private = decrypt_private_token(token.private_data, PROTOCOL_ID, token.expire_timestamp, token.nonce, PRIVATE_KEY)
    assert private.user_data == b"role=mentor" + bytes(256 - 11)
    assert token.client_to_server_key != token.server_to_client_key
    assert token.expire_timestamp == token.create_timestamp + 30


def test_negative_expire_means_never_and_negative_timeout_round_trips():
    token = make_token(expire_seconds=-1, timeout_seconds=-1)
    assert token.expire_timestamp == UINT64_MAX
    parsed = ConnectToken.decode(token.encode())
    assert parsed.timeout_seconds == -1
    private = decrypt_private_token(parsed.private_data, PROTOCOL_ID, UINT64_MAX, TOKEN_NONCE, PRIVATE_KEY)
    assert private.timeout_seconds == -1


def test_thirty_two_ipv6_addresses_fit():
    addresses = [f"[2001:db8::{i:x}]:{40000 + i}" for i in range(1, 33)]
    token = make_token(server_addresses=addresses)
    parsed = ConnectToken.decode(token.encode())
    assert [str(a) for a in parsed.server_addresses] == addresses
    private = decrypt_private_token(parsed.private_data, PROTOCOL_ID, EXPIRE, TOKEN_NONCE, PRIVATE_KEY)
    assert private.server_addresses == parsed.server_addresses


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(server_addresses=[]), "server addresses"),
        (dict(server_addresses=[f"127.0.0.1:{40000 + i}" for i in range(33)]), "server addresses"),
        (dict(user_data=bytes(257)), "user_data"),
        (dict(private_key=bytes(31)), "private_key"),
        (dict(nonce=bytes(23)), "nonce"),
        (dict(client_to_server_key=bytes(16)), "client_to_server_key"),
        (dict(client_id=-1), "client_id"),
        (dict(protocol_id=1 << 64), "protocol_id"),
        (dict(timeout_seconds=1 << 31), "timeout_seconds"),
        (dict(server_addresses=["localhost:40000"]), "does not appear"),
        (dict(server_addresses=["127.0.0.1"]), "address"),
    ],
)
def test_generate_rejects_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_token(**overrides)


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


ADDRESS_OFFSET = 13 + 8 + 8 + 8 + 24 + 1024  # timeout seconds, then the address count


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:-1], "2047 bytes"),
        (lambda d: d + b"\x00", "2049 bytes"),
        (lambda d: _patched(d, 0, b"NETCODE 1.01\x00"), "version"),
        (lambda d: _patched(d, 12, b"X"), "version"),
        (lambda d: _patched(d, 13 + 8, u64(EXPIRE + 1)), "create timestamp"),
        (lambda d: _patched(d, ADDRESS_OFFSET + 4, u32(0)), "number of server addresses"),
        (lambda d: _patched(d, ADDRESS_OFFSET + 4, u32(33)), "number of server addresses"),
        (lambda d: _patched(d, ADDRESS_OFFSET + 8, b"\x00"), "address type"),
        (lambda d: _patched(d, ADDRESS_OFFSET + 8, b"\x03"), "address type"),
    ],
)
def test_decode_rejects_malformed_tokens(mutate, message):
    with pytest.raises(ConnectTokenError, match=message):
        ConnectToken.decode(mutate(make_token().encode()))


def test_decode_rejects_non_bytes():
    with pytest.raises(ConnectTokenError):
        ConnectToken.decode("not bytes")  # type: ignore[arg-type]
