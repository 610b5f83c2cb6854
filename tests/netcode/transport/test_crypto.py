"""AEAD wrappers: None (not an exception) on authentication failure; key hygiene."""

import pytest

from netcode.transport.crypto import (
    PacketKey,
    aead_decrypt,
    aead_encrypt,
    generate_key,
    sequence_nonce,
    xaead_decrypt,
    xaead_encrypt,
)


def test_sequence_nonce_layout():
    assert sequence_nonce(0x0102030405060708) == b"\x00\x00\x00\x00\x08\x07\x06\x05\x04\x03\x02\x01"


def test_chacha_round_trip_and_failures():
    key = generate_key()
    nonce = sequence_nonce(1)
    sealed = aead_encrypt(key, nonce, b"data", b"ad")
    assert aead_decrypt(key, nonce, sealed, b"ad") == b"data"
    assert aead_decrypt(key, nonce, sealed, b"AD") is None
    assert aead_decrypt(key, sequence_nonce(2), sealed, b"ad") is None
    assert aead_decrypt(generate_key(), nonce, sealed, b"ad") is None
    assert aead_decrypt(key, nonce, sealed[:15], b"ad") is None


def test_xchacha_round_trip_and_failures():
    key, nonce = generate_key(), bytes(24)
    sealed = xaead_encrypt(key, nonce, b"secret", b"ad")
    assert xaead_decrypt(key, nonce, sealed, b"ad") == b"secret"
    assert xaead_decrypt(key, nonce, sealed, b"") is None
    assert xaead_decrypt(key, bytes(23), sealed, b"ad") is None
    assert xaead_decrypt(key[:31], nonce, sealed, b"ad") is None
    assert xaead_decrypt(key, nonce, sealed[:10], b"ad") is None
    with pytest.raises(ValueError):
        xaead_encrypt(key, bytes(12), b"x", b"")
    with pytest.raises(ValueError):
        xaead_encrypt(key[:16], nonce, b"x", b"")


def test_packet_key_checks_size_and_hides_material():
    with pytest.raises(ValueError):
        PacketKey(bytes(16))
    key = PacketKey(bytes(range(32)))
    assert "hidden" in repr(key)
    assert generate_key() != generate_key()
