"""Thin AEAD wrappers used by the netcode wire layer.

* ChaCha20-Poly1305 IETF (12-byte nonce) for every packet and for challenge tokens, through the
  ``cryptography`` package: the fastest binding per packet (about 1.7 us per 1,200-byte packet).
* XChaCha20-Poly1305 IETF (24-byte nonce) for the private connect token, through PyNaCl's libsodium
  binding (``cryptography`` has no XChaCha).

Decryption returns ``None`` instead of raising on authentication failure, so that callers can drop
forged or corrupted datagrams cheaply without exception handling on the hot path.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as _sodium
from nacl.exceptions import CryptoError

from netcode.transport.constants import CONNECT_TOKEN_NONCE_BYTES, KEY_BYTES, MAC_BYTES

NONCE_BYTES = 12
_NONCE_PAD = b"\x00\x00\x00\x00"


def generate_key() -> bytes:
    """A fresh random 32-byte key (private key, per-connection keys, challenge key)."""
    return os.urandom(KEY_BYTES)


def random_bytes(count: int) -> bytes:
    """Cryptographically secure random bytes (e.g. a 24-byte connect token nonce)."""
    return os.urandom(count)


def sequence_nonce(sequence: int) -> bytes:
    """The 96-bit IETF nonce for a 64-bit sequence: four zero bytes, then the sequence little-endian.

    This is the reference implementation's layout for packet and challenge token encryption.
    """
    return _NONCE_PAD + sequence.to_bytes(8, "little")


class PacketKey:
    """A ChaCha20-Poly1305 key with its cipher object prepared once.

    Endpoints keep one per connection direction so that encrypting or decrypting a packet does not
    re-run the key setup.
    """

    __slots__ = ("_aead", "key")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
        self.key = bytes(key)
        self._aead = ChaCha20Poly1305(self.key)

    def encrypt(self, nonce: bytes, plaintext: bytes, associated_data: bytes | None) -> bytes:
        """Ciphertext followed by the 16-byte tag."""
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes | None) -> bytes | None:
        """Plaintext, or None if the tag does not verify (or the input is shorter than a tag)."""
        if len(ciphertext) < MAC_BYTES:
            return None
        try:
            return self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            return None

    def __repr__(self) -> str:  # never print key material
        return "PacketKey(<hidden>)"


def as_packet_key(key: "bytes | PacketKey") -> PacketKey:
    """Accept raw key bytes or a prepared PacketKey."""
    return key if isinstance(key, PacketKey) else PacketKey(key)


def aead_encrypt(key: "bytes | PacketKey", nonce: bytes, plaintext: bytes, associated_data: bytes | None) -> bytes:
    """ChaCha20-Poly1305 IETF encrypt; returns ciphertext + tag."""
    return as_packet_key(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(
    key: "bytes | PacketKey", nonce: bytes, ciphertext: bytes, associated_data: bytes | None
) -> bytes | None:
    """ChaCha20-Poly1305 IETF decrypt; None on authentication failure."""
    return as_packet_key(key).decrypt(nonce, ciphertext, associated_data)


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305 IETF encrypt (24-byte nonce); returns ciphertext + tag."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    if len(nonce) != CONNECT_TOKEN_NONCE_BYTES:
        raise ValueError(f"nonce must be {CONNECT_TOKEN_NONCE_BYTES} bytes, got {len(nonce)}")
    return _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(associated_data), nonce, key)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes | None:
    """XChaCha20-Poly1305 IETF decrypt; None on authentication failure or malformed input."""
    if len(key) != KEY_BYTES or len(nonce) != CONNECT_TOKEN_NONCE_BYTES or len(ciphertext) < MAC_BYTES:
        return None
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(ciphertext), bytes(associated_data), bytes(nonce), bytes(key)
        )
    except CryptoError:
        return None
