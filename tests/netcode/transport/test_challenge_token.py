"""Challenge token: 300-byte layout under a per-server key, round trip and rejection."""

import pytest

from netcode.transport.challenge_token import ChallengeToken, decrypt_challenge_token, encrypt_challenge_token
from netcode.transport.crypto import PacketKey

from .wire_helpers import CLIENT_ID, USER_DATA, chacha_encrypt, u64

SERVER_KEY = bytes(range(200, 232))
TOKEN = ChallengeToken(CLIENT_ID, USER_DATA)


def test_layout():
    plaintext = u64(CLIENT_ID) + USER_DATA + bytes(284 - 8 - 256)
    expected = chacha_encrypt(SERVER_KEY, 77, plaintext, None)  # no associated data
    assert encrypt_challenge_token(TOKEN, 77, SERVER_KEY) == expected
    assert len(expected) == 300


def test_round_trip_with_raw_and_prepared_keys():
    data = encrypt_challenge_token(TOKEN, 12345, PacketKey(SERVER_KEY))
    assert decrypt_challenge_token(data, 12345, SERVER_KEY) == TOKEN
    assert decrypt_challenge_token(data, 12345, PacketKey(SERVER_KEY)) == TOKEN


def test_rejections():
    data = encrypt_challenge_token(TOKEN, 5, SERVER_KEY)
    assert decrypt_challenge_token(data, 6, SERVER_KEY) is None
    assert decrypt_challenge_token(data, 5, bytes(32)) is None
    assert decrypt_challenge_token(data[:-1], 5, SERVER_KEY) is None
    assert decrypt_challenge_token(data + b"\x00", 5, SERVER_KEY) is None
    assert decrypt_challenge_token(data, -1, SERVER_KEY) is None
    for index in range(len(data)):
        mutated = bytearray(data)
        mutated[index] ^= 0x04
        assert decrypt_challenge_token(bytes(mutated), 5, SERVER_KEY) is None, index


def test_invalid_tokens_are_refused():
    with pytest.raises(ValueError):
        ChallengeToken(-1, USER_DATA)
    with pytest.raises(ValueError):
        ChallengeToken(1, b"short")
    with pytest.raises(ValueError):
        encrypt_challenge_token(TOKEN, 1 << 64, SERVER_KEY)
