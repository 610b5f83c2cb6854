"""Shared fixtures for the netcode wire tests: fixed keys and an independent AEAD (PyNaCl/libsodium).

Expected bytes in these tests are built by hand from STANDARD.md's field layouts with ``int.to_bytes``
and encrypted with libsodium through PyNaCl, a different library from the one the implementation uses
for packets (``cryptography``), so a wrong nonce or associated-data layout cannot pass by symmetry.
"""

from nacl import bindings as sodium

PROTOCOL_ID = 0x1122334455667788
CLIENT_ID = 0x0102030405060708
PRIVATE_KEY = bytes(range(32))
C2S_KEY = bytes(range(32, 64))
S2C_KEY = bytes(range(64, 96))
TOKEN_NONCE = bytes(range(100, 124))
CREATE = 1_700_000_000
EXPIRE_SECONDS = 30
TIMEOUT = 5
USER_DATA = bytes((7 * i + 3) % 256 for i in range(256))
VERSION = b"NETCODE 1.02\x00"


def u8(v: int) -> bytes:
    return v.to_bytes(1, "little")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "little")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def i32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


def u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


IPV4_127_0_0_1_40000 = u8(1) + bytes([127, 0, 0, 1]) + u16(40000)
# [2001:db8::1]:40001 -> groups 0x2001, 0x0db8, 0, 0, 0, 0, 0, 0x0001, each uint16 little-endian.
IPV6_2001_DB8__1_40001 = u8(2) + u16(0x2001) + u16(0x0DB8) + u16(0) * 5 + u16(1) + u16(40001)


def chacha_encrypt(key: bytes, sequence: int, plaintext: bytes, ad: bytes | None) -> bytes:
    """ChaCha20-Poly1305 IETF with the netcode nonce, through libsodium."""
    nonce = b"\x00" * 4 + u64(sequence)
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def xchacha_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def packet_ad(protocol_id: int, prefix: int) -> bytes:
    return VERSION + u64(protocol_id) + u8(prefix)
