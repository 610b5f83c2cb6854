"""Connect tokens (netcode 1.02): minted by the join service, presented by clients, opened by servers.

A connect token is 2048 bytes. Its public part tells the client where to connect and which keys to use;
its private part (1024 bytes) is encrypted with XChaCha20-Poly1305 under a private key shared only by
the join service and the dedicated servers, so a client can neither read nor alter it.

Private part before encryption (zero padded to 1008 bytes, then encrypted to 1008 + 16 byte MAC)::

    client id (u64) | timeout seconds (i32) | num server addresses (u32, 1..32) | addresses
    | client-to-server key (32) | server-to-client key (32) | user data (256)

Associated data of that encryption: version info (13) | protocol id (u64) | expire timestamp (u64).

Public token (zero padded to 2048 bytes)::

    version info (13) | protocol id (u64) | create timestamp (u64) | expire timestamp (u64)
    | nonce (24) | encrypted private part (1024) | timeout seconds (i32)
    | num server addresses (u32) | addresses | client-to-server key (32) | server-to-client key (32)
"""

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from netcode.transport.address import Address, decode_address
from netcode.transport.constants import (
    CONNECT_TOKEN_BYTES,
    CONNECT_TOKEN_NONCE_BYTES,
    CONNECT_TOKEN_PRIVATE_BYTES,
    KEY_BYTES,
    MAC_BYTES,
    MAX_SERVERS_PER_CONNECT,
    UINT64_MAX,
    USER_DATA_BYTES,
    VERSION_INFO,
    VERSION_INFO_BYTES,
)
from netcode.transport.crypto import generate_key, random_bytes, xaead_decrypt, xaead_encrypt

PRIVATE_PLAINTEXT_BYTES = CONNECT_TOKEN_PRIVATE_BYTES - MAC_BYTES  # 1008

_U64 = struct.Struct("<Q")
_PRIVATE_HEAD = struct.Struct("<QiI")  # client id, timeout seconds, num server addresses
_PUBLIC_HEAD = struct.Struct("<QQQ")  # protocol id, create timestamp, expire timestamp
_PUBLIC_MID = struct.Struct("<iI")  # timeout seconds, num server addresses
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class ConnectTokenError(ValueError):
    """A connect token (or its private part) is malformed."""


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise ValueError(f"{name} must be an unsigned 64-bit integer, got {value!r}")


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value) if hasattr(value, '__len__') else value!r}")


def _check_addresses(addresses: Sequence[Address]) -> None:
    if not 1 <= len(addresses) <= MAX_SERVERS_PER_CONNECT:
        raise ValueError(f"need 1..{MAX_SERVERS_PER_CONNECT} server addresses, got {len(addresses)}")
    for address in addresses:
        if not isinstance(address, Address):
            raise TypeError(f"server address must be an Address, got {address!r}")


def _check_timeout(value: int) -> None:
    if not isinstance(value, int) or not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"timeout_seconds must be a signed 32-bit integer, got {value!r}")


def _read_addresses(data: bytes, offset: int, count: int) -> tuple[tuple[Address, ...], int]:
    if not 1 <= count <= MAX_SERVERS_PER_CONNECT:
        raise ConnectTokenError(f"number of server addresses {count} outside [1, {MAX_SERVERS_PER_CONNECT}]")
    addresses = []
    for _ in range(count):
        try:
            address, offset = decode_address(data, offset)
        except ValueError as exc:
            raise ConnectTokenError(str(exc)) from None
        addresses.append(address)
    return tuple(addresses), offset


def private_associated_data(protocol_id: int, expire_timestamp: int) -> bytes:
    """Associated data of the private token encryption: version info, protocol id, expire timestamp."""
    return VERSION_INFO + _U64.pack(protocol_id) + _U64.pack(expire_timestamp)


@dataclass(frozen=True, slots=True)
class ConnectTokenPrivate:
    """The part of a connect token that only the join service and the servers can read."""

    client_id: int
    timeout_seconds: int
    server_addresses: tuple[Address, ...]
    client_to_server_key: bytes
    server_to_client_key: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        _check_u64("client_id", self.client_id)
        _check_timeout(self.timeout_seconds)
        _check_addresses(self.server_addresses)
        _check_bytes("client_to_server_key", self.client_to_server_key, KEY_BYTES)
        _check_bytes("server_to_client_key", self.server_to_client_key, KEY_BYTES)
        _check_bytes("user_data", self.user_data, USER_DATA_BYTES)

    def encode(self) -> bytes:
        """The 1008-byte plaintext (zero padded), ready for encryption."""
        parts = [_PRIVATE_HEAD.pack(self.client_id, self.timeout_seconds, len(self.server_addresses))]
        parts.extend(address.encode() for address in self.server_addresses)
        parts += [self.client_to_server_key, self.server_to_client_key, self.user_data]
        body = b"".join(parts)
        return body + bytes(PRIVATE_PLAINTEXT_BYTES - len(body))

    @classmethod
    def decode(cls, plaintext: bytes) -> "ConnectTokenPrivate":
        """Parse a decrypted private token; raises ConnectTokenError if malformed."""
        if len(plaintext) < PRIVATE_PLAINTEXT_BYTES:
            raise ConnectTokenError(f"private connect token is {len(plaintext)} bytes, need {PRIVATE_PLAINTEXT_BYTES}")
        client_id, timeout, count = _PRIVATE_HEAD.unpack_from(plaintext, 0)
        addresses, offset = _read_addresses(plaintext, _PRIVATE_HEAD.size, count)
        c2s = bytes(plaintext[offset : offset + KEY_BYTES])
        s2c = bytes(plaintext[offset + KEY_BYTES : offset + 2 * KEY_BYTES])
        user_data = bytes(plaintext[offset + 2 * KEY_BYTES : offset + 2 * KEY_BYTES + USER_DATA_BYTES])
        return cls(client_id, timeout, addresses, c2s, s2c, user_data)


def encrypt_private_token(
    private: ConnectTokenPrivate, protocol_id: int, expire_timestamp: int, nonce: bytes, private_key: bytes
) -> bytes:
    """Encrypt a private token to its 1024-byte wire form (1008 ciphertext + 16 MAC)."""
    _check_u64("protocol_id", protocol_id)
    _check_u64("expire_timestamp", expire_timestamp)
    _check_bytes("nonce", nonce, CONNECT_TOKEN_NONCE_BYTES)
    _check_bytes("private_key", private_key, KEY_BYTES)
    ad = private_associated_data(protocol_id, expire_timestamp)
    return xaead_encrypt(private_key, nonce, private.encode(), ad)


def decrypt_private_token(
    encrypted: bytes, protocol_id: int, expire_timestamp: int, nonce: bytes, private_key: bytes
) -> ConnectTokenPrivate | None:
    """Server side: decrypt and parse the private token; None if it fails to authenticate or to parse."""
    if len(encrypted) != CONNECT_TOKEN_PRIVATE_BYTES:
        return None
    if not (0 <= protocol_id <= UINT64_MAX and 0 <= expire_timestamp <= UINT64_MAX):
        return None
    plaintext = xaead_decrypt(private_key, nonce, encrypted, private_associated_data(protocol_id, expire_timestamp))
    if plaintext is None:
        return None
    try:
        return ConnectTokenPrivate.decode(plaintext)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ConnectToken:
    """The whole 2048-byte connect token as the client receives it (over HTTPS from the join service)."""

    protocol_id: int
    create_timestamp: int
    expire_timestamp: int
    nonce: bytes
    private_data: bytes
    """The encrypted private part (1024 bytes); opaque to the client."""
    timeout_seconds: int
    server_addresses: tuple[Address, ...]
    client_to_server_key: bytes
    server_to_client_key: bytes

    def __post_init__(self) -> None:
        _check_u64("protocol_id", self.protocol_id)
        _check_u64("create_timestamp", self.create_timestamp)
        _check_u64("expire_timestamp", self.expire_timestamp)
        if self.create_timestamp > self.expire_timestamp:
            raise ConnectTokenError("create timestamp is after the expire timestamp")
        _check_bytes("nonce", self.nonce, CONNECT_TOKEN_NONCE_BYTES)
        _check_bytes("private_data", self.private_data, CONNECT_TOKEN_PRIVATE_BYTES)
        _check_timeout(self.timeout_seconds)
        _check_addresses(self.server_addresses)
        _check_bytes("client_to_server_key", self.client_to_server_key, KEY_BYTES)
        _check_bytes("server_to_client_key", self.server_to_client_key, KEY_BYTES)

    def encode(self) -> bytes:
        """The 2048-byte wire form."""
        parts = [
            VERSION_INFO,
            _PUBLIC_HEAD.pack(self.protocol_id, self.create_timestamp, self.expire_timestamp),
            self.nonce,
            self.private_data,
            _PUBLIC_MID.pack(self.timeout_seconds, len(self.server_addresses)),
        ]
        parts.extend(address.encode() for address in self.server_addresses)
        parts += [self.client_to_server_key, self.server_to_client_key]
        body = b"".join(parts)
        return body + bytes(CONNECT_TOKEN_BYTES - len(body))

    @classmethod
    def decode(cls, data: bytes) -> "ConnectToken":
        """Parse and validate a 2048-byte token; raises ConnectTokenError with the reason.

        Checks, as the reference client does: exact size, version info, create <= expire, 1..32 server
        addresses, address types 1 or 2.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConnectTokenError(f"connect token must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != CONNECT_TOKEN_BYTES:
            raise ConnectTokenError(f"connect token is {len(data)} bytes, expected {CONNECT_TOKEN_BYTES}")
        if data[:VERSION_INFO_BYTES] != VERSION_INFO:
            raise ConnectTokenError(f"bad version info {data[:VERSION_INFO_BYTES]!r}, expected {VERSION_INFO!r}")
        offset = VERSION_INFO_BYTES
        protocol_id, create, expire = _PUBLIC_HEAD.unpack_from(data, offset)
        offset += _PUBLIC_HEAD.size
        if create > expire:
            raise ConnectTokenError("create timestamp is after the expire timestamp")
        nonce = data[offset : offset + CONNECT_TOKEN_NONCE_BYTES]
        offset += CONNECT_TOKEN_NONCE_BYTES
        private_data = data[offset : offset + CONNECT_TOKEN_PRIVATE_BYTES]
        offset += CONNECT_TOKEN_PRIVATE_BYTES
        timeout, count = _PUBLIC_MID.unpack_from(data, offset)
        addresses, offset = _read_addresses(data, offset + _PUBLIC_MID.size, count)
        c2s = data[offset : offset + KEY_BYTES]
        s2c = data[offset + KEY_BYTES : offset + 2 * KEY_BYTES]
        return cls(protocol_id, create, expire, nonce, private_data, timeout, addresses, c2s, s2c)

    @property
    def private_mac(self) -> bytes:
        """The 16-byte MAC of the private part: servers remember it to refuse token reuse from another address."""
        return self.private_data[-MAC_BYTES:]


def generate_connect_token(
    *,
    private_key: bytes,
    protocol_id: int,
    client_id: int,
    server_addresses: Sequence["Address | str | tuple[str, int]"],
    expire_seconds: int,
    timeout_seconds: int,
    user_data: bytes = b"",
    internal_server_addresses: Sequence["Address | str | tuple[str, int]"] | None = None,
    create_timestamp: int | None = None,
    nonce: bytes | None = None,
    client_to_server_key: bytes | None = None,
    server_to_client_key: bytes | None = None,
) -> ConnectToken:
    """Mint a connect token (the join service's job).

    ``server_addresses`` go in the public part (where clients connect); ``internal_server_addresses``,
    if given, go in the private part instead (the address each server checks against its own, for servers
    behind a load balancer or NAT; same count and order). ``expire_seconds`` < 0 means never expires
    (expire timestamp 2**64-1); ``timeout_seconds`` < 0 disables timeouts (development only).
    ``user_data`` is at most 256 bytes and is zero padded. ``create_timestamp`` (unix seconds), ``nonce``
    and the two keys default to now / random; tests pass them to get deterministic bytes.
    """
    public = tuple(Address.coerce(a) for a in server_addresses)
    internal = (
        public if internal_server_addresses is None else tuple(Address.coerce(a) for a in internal_server_addresses)
    )
    if len(internal) != len(public):
        raise ValueError("internal_server_addresses must match server_addresses in count")
    if len(user_data) > USER_DATA_BYTES:
        raise ValueError(f"user_data is {len(user_data)} bytes, at most {USER_DATA_BYTES} allowed")
    create = int(time.time()) if create_timestamp is None else create_timestamp
    _check_u64("create_timestamp", create)
    expire = UINT64_MAX if expire_seconds < 0 else create + expire_seconds
    nonce = random_bytes(CONNECT_TOKEN_NONCE_BYTES) if nonce is None else nonce
    private = ConnectTokenPrivate(
        client_id=client_id,
        timeout_seconds=timeout_seconds,
        server_addresses=internal,
        client_to_server_key=generate_key() if client_to_server_key is None else bytes(client_to_server_key),
        server_to_client_key=generate_key() if server_to_client_key is None else bytes(server_to_client_key),
        user_data=bytes(user_data) + bytes(USER_DATA_BYTES - len(user_data)),
    )
    return ConnectToken(
        protocol_id=protocol_id,
        create_timestamp=create,
        expire_timestamp=expire,
        nonce=nonce,
        private_data=encrypt_private_token(private, protocol_id, expire, nonce, private_key),
        timeout_seconds=timeout_seconds,
        server_addresses=public,
        client_to_server_key=private.client_to_server_key,
        server_to_client_key=private.server_to_client_key,
    )
