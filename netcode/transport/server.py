"""The netcode 1.02 server endpoint as a sans-IO core: datagrams and a clock in, datagrams out.

``ServerCore`` holds the server side of the standard (STANDARD.md, "Server-Side Connection Process"):

* **Connection requests** are checked in the standard's order: the wire checks in ``decode_packet``
  (size, version, protocol id, expiry, private token decryption), then: this server's address is in the
  token, the source address is not connected, the client id is not connected, the token (its 16-byte
  MAC) has not been used from another address, a slot is free (else *denied*). Then an *encryption
  mapping* (a pending client: the token's keys for that source address) is added and a *challenge* sent.
* **Connection responses** from a pending address must carry a challenge token that decrypts under
  this process's random challenge key; the client then takes the lowest free slot, gets a keep-alive
  at once and is *unconfirmed* until its first keep-alive or payload arrives (until then every payload
  to it is preceded by a keep-alive so that it learns its slot).
* **Connected clients** exchange keep-alive, payload and disconnect packets under a replay window;
  keep-alives go out when nothing else was sent for ``keep_alive_interval``; a client silent for its
  token's timeout is disconnected; disconnects are sent ``disconnect_packets`` times (UDP loses some).

Amplification: the only replies to unconnected sources are a challenge (333 bytes) or denied (25) to a
1078-byte request and denied (25) or a keep-alive (at most 33) to a 333-byte response, so a spoofed
source never gets more bytes than it sent. Packets to unconnected clients (denied, challenge) use a
server-wide sequence starting at 2**63, as the reference does, so they never reuse a nonce of the
per-client sequence (which starts at 0) under the same server-to-client key.

Budgets (PROTOCOL.md, "Where our server deliberately differs"): datagrams from sources that are not
connected spend a per-address and a server-wide token bucket before any decryption; a connected client's
rate budget is spent only by packets that authenticate under its key, so spoofing its address costs it
nothing. A token that completed a handshake is refused again until it expires (nonce reuse).

Nothing here touches sockets or clocks: ``send`` is a callable, every method takes ``now`` (seconds,
any monotonic origin). Only token expiry needs wall-clock time (unix seconds), read from ``unix_time``.
Every ignored datagram is counted in ``drops`` by reason; ``receive`` never raises on any input.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from netcode.transport.address import Address
from netcode.transport.challenge_token import ChallengeToken, decrypt_challenge_token, encrypt_challenge_token
from netcode.transport.constants import KEY_BYTES, MAX_PAYLOAD_BYTES, UINT64_MAX, PacketType
from netcode.transport.crypto import PacketKey, generate_key
from netcode.transport.packets import (
    SERVER_ALLOWED,
    ConnectionChallengePacket,
    ConnectionDeniedPacket,
    ConnectionDisconnectPacket,
    ConnectionKeepAlivePacket,
    ConnectionPayloadPacket,
    ConnectionRequestPacket,
    ConnectionResponsePacket,
    EncryptedPacket,
    decode_packet,
    encode_packet,
    encode_payload_packet,
)
from netcode.transport.replay import ReplayProtection

log = logging.getLogger(__name__)

SendFn = Callable[[bytes, Address], None]
OnConnect = Callable[[int, int, bytes, Address], None]
OnDisconnect = Callable[[int, str], None]
OnPayload = Callable[[int, bytes], None]

GLOBAL_SEQUENCE_START = 1 << 63
"""First sequence of packets sent to not-yet-connected clients (denied, challenge), as in the reference."""

PENDING_PER_SLOT = 4
"""Pending clients (encryption mappings) allowed per slot, as the reference's 4 x max clients."""

_PENDING_ALLOWED = frozenset({PacketType.CONNECTION_RESPONSE})
_CONNECTED_ALLOWED = frozenset(
    {PacketType.CONNECTION_KEEP_ALIVE, PacketType.CONNECTION_PAYLOAD, PacketType.CONNECTION_DISCONNECT}
)
_BYTES = (bytes, bytearray, memoryview)


class DisconnectReason:
    """Reason strings passed to ``on_disconnect``."""

    CLIENT = "client_disconnect"
    SERVER = "server_disconnect"
    TIMEOUT = "timeout"


@dataclass
class ServerConfig:
    """What one server process needs: its identity (protocol id, private key, public addresses) and limits.

    ``public_addresses`` are the addresses this server compares with the token's (private) server
    addresses: a token must name one of them. ``max_packets_per_second_per_client`` (None = unlimited)
    drops a connected client's excess *authenticated* packets (token bucket, one second of burst): only
    packets that decrypt under its key spend its budget, so a spoofer of its address cannot.
    ``max_unauthenticated_per_second_per_address`` and ``max_unauthenticated_per_second`` bound what sources
    that are not connected may make the server decrypt (connection requests: the XChaCha20 token; responses:
    the challenge token), per source address (``tracked_sources`` of them, least recently seen forgotten
    first) and server-wide, checked before any decryption.
    """

    protocol_id: int
    private_key: bytes
    public_addresses: list[Address]
    max_clients: int = 256
    keep_alive_interval: float = 0.1
    disconnect_packets: int = 10
    token_history: int = 1024
    max_packets_per_second_per_client: float | None = 1000
    max_unauthenticated_per_second_per_address: float | None = 20
    max_unauthenticated_per_second: float | None = 2000
    tracked_sources: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.protocol_id, int) or not 0 <= self.protocol_id <= UINT64_MAX:
            raise ValueError("protocol_id must be an unsigned 64-bit integer")
        if not isinstance(self.private_key, bytes | bytearray) or len(self.private_key) != KEY_BYTES:
            raise ValueError(f"private_key must be {KEY_BYTES} bytes")
        self.private_key = bytes(self.private_key)
        self.public_addresses = [Address.coerce(a) for a in self.public_addresses]
        if not self.public_addresses:
            raise ValueError("need at least one public address")
        if self.max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        if self.keep_alive_interval <= 0:
            raise ValueError("keep_alive_interval must be positive")
        if self.disconnect_packets < 0 or self.token_history < 1:
            raise ValueError("disconnect_packets must be >= 0 and token_history >= 1")
        for name in (
            "max_packets_per_second_per_client",
            "max_unauthenticated_per_second_per_address",
            "max_unauthenticated_per_second",
        ):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ValueError(f"{name} must be positive or None")
        if self.tracked_sources < 1:
            raise ValueError("tracked_sources must be at least 1")

    def __repr__(self) -> str:  # never print the private key
        addresses = [str(a) for a in self.public_addresses]
        limits = f"max_clients={self.max_clients}"
        return f"ServerConfig(protocol_id={self.protocol_id:#x}, public_addresses={addresses}, {limits})"


@dataclass(slots=True, eq=False)
class _Pending:
    """An encryption mapping for a source address that sent a valid request but is not connected yet."""

    send_key: PacketKey
    recv_key: PacketKey
    timeout: int
    last_access: float
    expire_at: float
    """Server time at which the connect token expires."""
    token_mac: bytes


@dataclass(slots=True, eq=False)
class _Client:
    """A connected client in slot ``index``."""

    index: int
    address: Address
    client_id: int
    user_data: bytes
    send_key: PacketKey
    recv_key: PacketKey
    timeout: int
    last_recv: float
    last_send: float
    bucket_time: float
    bucket: float
    sequence: int = 0
    confirmed: bool = False
    replay: ReplayProtection = field(default_factory=ReplayProtection)


class ServerCore:
    """Sans-IO netcode server: feed it datagrams with ``receive`` and time with ``update``."""

    def __init__(
        self,
        config: ServerConfig,
        send: SendFn,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_payload: OnPayload | None = None,
        now: float = 0.0,
        *,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._send = send
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_payload = on_payload
        self._unix_time = unix_time
        self._time = now
        self._protocol_id = config.protocol_id
        self._public = frozenset(config.public_addresses)
        self._slots: list[_Client | None] = [None] * config.max_clients
        self._free: list[int] = list(range(config.max_clients))  # a heap: lowest free slot first
        self._by_address: dict[Address, _Client] = {}
        self._by_id: dict[int, _Client] = {}
        self._pending: dict[Address, _Pending] = {}
        self._max_pending = PENDING_PER_SLOT * config.max_clients
        self._token_history: OrderedDict[bytes, Address] = OrderedDict()
        # Tokens that completed a handshake, until they expire: a second connection with one would restart
        # both sides' packet sequences under the same keys, reusing ChaCha20 nonces.
        self._spent_tokens: OrderedDict[bytes, float] = OrderedDict()
        self._challenge_key = PacketKey(generate_key())
        self._challenge_sequence = 0
        self._global_sequence = GLOBAL_SEQUENCE_START
        self._rate = config.max_packets_per_second_per_client
        # Pre-authentication budgets: source address -> [tokens, stamp] (bounded, LRU), and the server's.
        self._source_rate = config.max_unauthenticated_per_second_per_address
        self._sources: OrderedDict[Address, list[float]] = OrderedDict()
        self._global_rate = config.max_unauthenticated_per_second
        self._global_bucket = [float(self._global_rate or 0.0), now]
        self.drops: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    # -- queries -----------------------------------------------------------------------------------

    @property
    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._by_address)

    @property
    def pending_count(self) -> int:
        """Number of addresses that were challenged and have not connected yet."""
        return len(self._pending)

    def connected_clients(self) -> list[int]:
        """Slot indices of the connected clients, ascending."""
        return [c.index for c in self._slots if c is not None]

    def is_connected(self, client_index: int) -> bool:
        """Whether slot ``client_index`` holds a connected client."""
        return self._slot(client_index) is not None

    def client_address(self, client_index: int) -> Address | None:
        """Source address of the client in that slot (None if the slot is free)."""
        client = self._slot(client_index)
        return None if client is None else client.address

    def client_id(self, client_index: int) -> int | None:
        """Client id from the connect token of the client in that slot (None if free)."""
        client = self._slot(client_index)
        return None if client is None else client.client_id

    def client_user_data(self, client_index: int) -> bytes | None:
        """The token's 256 bytes of user data for the client in that slot (None if free)."""
        client = self._slot(client_index)
        return None if client is None else client.user_data

    def _slot(self, client_index: int) -> _Client | None:
        if isinstance(client_index, int) and 0 <= client_index < len(self._slots):
            return self._slots[client_index]
        return None

    # -- receiving ---------------------------------------------------------------------------------

    def receive(self, data: bytes, address: Address, now: float) -> None:
        """Process one datagram from ``address``. Never raises; ignored datagrams are counted in ``drops``."""
        self._time = now
        if not isinstance(data, _BYTES):
            self.drops["not_bytes"] += 1
            return
        self.stats["packets_in"] += 1
        self.stats["bytes_in"] += len(data)
        client = self._by_address.get(address)
        if client is not None:
            self._receive_connected(client, data, now)
        elif not data:
            self.drops["too_small"] += 1
        elif not self._admit_unauthenticated(address, now):
            return  # counted by _admit_unauthenticated
        elif data[0] == 0:
            self._receive_request(data, address, now)
        else:
            pending = self._pending.get(address)
            key = None if pending is None else pending.recv_key
            allowed = SERVER_ALLOWED if pending is None else _PENDING_ALLOWED
            packet, reason = decode_packet(data, protocol_id=self._protocol_id, allowed=allowed, key=key)
            if packet is None:
                self.drops[reason] += 1
            elif pending is not None and isinstance(packet, ConnectionResponsePacket):
                self._receive_response(packet, pending, address, now)
            else:  # unreachable: no key means decode_packet dropped it
                self.drops["type_not_allowed"] += 1

    def _admit_unauthenticated(self, address: Address, now: float) -> bool:
        """Whether a datagram from a source that is not connected may be decrypted: one token of its address's
        bucket and of the server's (checked in that order, so one flooding address cannot spend the
        server's). Cheap: a dict lookup and a few float operations, before any cryptography."""
        rate = self._source_rate
        if rate is not None:
            entry = self._sources.get(address)
            if entry is None:
                if len(self._sources) >= self.config.tracked_sources:
                    self._sources.popitem(last=False)
                entry = self._sources[address] = [rate, now]
            else:
                self._sources.move_to_end(address)
                entry[0] = min(rate, entry[0] + (now - entry[1]) * rate)
                entry[1] = now
            if entry[0] < 1.0:
                self.drops["unauthenticated_rate_limited_address"] += 1
                return False
            entry[0] -= 1.0
        rate = self._global_rate
        if rate is not None:
            bucket = self._global_bucket
            bucket[0] = min(rate, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] < 1.0:
                self.drops["unauthenticated_rate_limited_server"] += 1
                return False
            bucket[0] -= 1.0
        return True

    def _receive_request(self, data: bytes, address: Address, now: float) -> None:
        unix_now = self._unix_time()
        packet, reason = decode_packet(
            data,
            protocol_id=self._protocol_id,
            allowed=SERVER_ALLOWED,
            private_key=self.config.private_key,
            now=int(unix_now),
        )
        if packet is None:
            self.drops[reason] += 1
            return
        assert isinstance(packet, ConnectionRequestPacket) and packet.token is not None
        token = packet.token
        if self._public.isdisjoint(token.server_addresses):
            self.drops["server_address_not_in_token"] += 1
            return
        if address in self._by_address:
            self.drops["address_already_connected"] += 1
            return
        if token.client_id in self._by_id:
            self.drops["client_id_already_connected"] += 1
            return
        if packet.token_mac in self._spent_tokens:
            self.drops["token_already_connected"] += 1
            return
        if not self._check_token_history(packet.token_mac, address):
            self.drops["token_reused"] += 1
            return
        send_key = PacketKey(token.server_to_client_key)
        if not self._free:
            self._send_global(ConnectionDeniedPacket(self._next_global()), send_key, address, now)
            self.stats["denied_sent"] += 1
            return
        if address not in self._pending and len(self._pending) >= self._max_pending:
            self.drops["pending_full"] += 1
            return
        self._pending[address] = _Pending(
            send_key=send_key,
            recv_key=PacketKey(token.client_to_server_key),
            timeout=token.timeout_seconds,
            last_access=now,
            expire_at=now + max(0.0, packet.expire_timestamp - unix_now),
            token_mac=packet.token_mac,
        )
        sequence = self._challenge_sequence
        self._challenge_sequence += 1
        challenge = encrypt_challenge_token(
            ChallengeToken(token.client_id, token.user_data), sequence, self._challenge_key
        )
        packet_out = ConnectionChallengePacket(self._next_global(), sequence, challenge)
        self._send_global(packet_out, send_key, address, now)
        self.stats["challenges_sent"] += 1

    def _check_token_history(self, mac: bytes, address: Address) -> bool:
        """False if this token was already used from another address; else remember it (bounded, oldest out)."""
        seen = self._token_history.get(mac)
        if seen is not None:
            return seen == address
        if len(self._token_history) >= self.config.token_history:
            self._token_history.popitem(last=False)
        self._token_history[mac] = address
        return True

    def _spend_token(self, mac: bytes, expire_at: float) -> None:
        """Remember a token that connected until it expires (bounded like the token history, oldest out)."""
        if len(self._spent_tokens) >= self.config.token_history:
            self._spent_tokens.popitem(last=False)
        self._spent_tokens[mac] = expire_at

    def _receive_response(
        self, packet: ConnectionResponsePacket, pending: _Pending, address: Address, now: float
    ) -> None:
        pending.last_access = now
        challenge = decrypt_challenge_token(
            packet.challenge_token_data, packet.challenge_token_sequence, self._challenge_key
        )
        if challenge is None:
            self.drops["challenge_token_invalid"] += 1
            return
        if challenge.client_id in self._by_id:
            self.drops["client_id_already_connected"] += 1
            return
        if not self._free:
            self._send_global(ConnectionDeniedPacket(self._next_global()), pending.send_key, address, now)
            self.stats["denied_sent"] += 1
            return
        del self._pending[address]
        self._spend_token(pending.token_mac, pending.expire_at)
        index = heapq.heappop(self._free)
        client = _Client(
            index=index,
            address=address,
            client_id=challenge.client_id,
            user_data=bytes(challenge.user_data),
            send_key=pending.send_key,
            recv_key=pending.recv_key,
            timeout=pending.timeout,
            last_recv=now,
            last_send=now,
            bucket_time=now,
            bucket=self._rate or 0.0,
        )
        self._slots[index] = client
        self._by_address[address] = client
        self._by_id[client.client_id] = client
        self.stats["connects"] += 1
        self._send_keep_alive(client, now)
        if self.on_connect is not None:
            self.on_connect(index, client.client_id, client.user_data, address)

    def _receive_connected(self, client: _Client, data: bytes, now: float) -> None:
        """A datagram from a connected client's address, judged by that client's encrypted-packet path: UDP
        source addresses can be forged, so only a packet that authenticates under the client's key (and is not
        a replay) is the client's, touches its state or spends its rate budget. Forgeries cost one AEAD
        check (~2 us) and are counted as ``decrypt_failed``; they never delay the client's own packets."""
        packet, reason = decode_packet(
            data, protocol_id=self._protocol_id, allowed=_CONNECTED_ALLOWED, key=client.recv_key, replay=client.replay
        )
        if packet is None:
            # Requests and responses from a connected address (late resends) land here as type_not_allowed.
            self.drops[reason] += 1
            return
        rate = self._rate
        if rate is not None:
            bucket = min(rate, client.bucket + (now - client.bucket_time) * rate)
            client.bucket_time = now
            if bucket < 1.0:
                client.bucket = bucket
                self.drops["rate_limited"] += 1
                return
            client.bucket = bucket - 1.0
        if isinstance(packet, ConnectionPayloadPacket):
            client.last_recv = now
            client.confirmed = True
            if self.on_payload is not None:
                self.on_payload(client.index, packet.payload)
        elif isinstance(packet, ConnectionKeepAlivePacket):
            client.last_recv = now
            client.confirmed = True
        else:
            self._remove_client(client, DisconnectReason.CLIENT, now, send_packets=False)

    # -- sending -----------------------------------------------------------------------------------

    def _next_global(self) -> int:
        sequence = self._global_sequence
        self._global_sequence += 1
        return sequence

    def _send_global(self, packet: EncryptedPacket, key: PacketKey, address: Address, now: float) -> None:
        data = encode_packet(packet, key, self._protocol_id)
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._send(data, address)

    def _send_to_client(self, client: _Client, packet: EncryptedPacket, now: float) -> None:
        self._send_datagram(client, encode_packet(packet, client.send_key, self._protocol_id), now)

    def _send_datagram(self, client: _Client, data: bytes, now: float) -> None:
        client.last_send = now
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._send(data, client.address)

    def _send_keep_alive(self, client: _Client, now: float) -> None:
        sequence = client.sequence
        client.sequence = sequence + 1
        packet = ConnectionKeepAlivePacket(sequence, client.index, self.config.max_clients)
        self._send_to_client(client, packet, now)

    def send_payload(self, client_index: int, payload: bytes, now: float) -> bool:
        """Send 1..1200 bytes to a connected client; False if the slot is free or the size is wrong."""
        client = self._slot(client_index)
        if client is None or not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
            return False
        self._time = now
        if not client.confirmed:
            self._send_keep_alive(client, now)
        sequence = client.sequence
        client.sequence = sequence + 1
        self._send_datagram(client, encode_payload_packet(sequence, payload, client.send_key, self._protocol_id), now)
        return True

    # -- time --------------------------------------------------------------------------------------

    def update(self, now: float) -> None:
        """Send due keep-alives, time out silent clients, forget expired pending clients."""
        self._time = now
        interval = self.config.keep_alive_interval
        for client in list(self._by_address.values()):
            if client.timeout > 0 and client.last_recv + client.timeout <= now:
                self._remove_client(client, DisconnectReason.TIMEOUT, now, send_packets=True)
            elif client.last_send + interval <= now:
                self._send_keep_alive(client, now)
        if self._pending:
            expired = [
                address
                for address, p in self._pending.items()
                if p.expire_at <= now or (p.timeout > 0 and p.last_access + p.timeout <= now)
            ]
            for address in expired:
                del self._pending[address]
            self.stats["pending_expired"] += len(expired)
        while self._spent_tokens and next(iter(self._spent_tokens.values())) <= now:
            self._spent_tokens.popitem(last=False)

    # -- disconnecting -----------------------------------------------------------------------------

    def disconnect(self, client_index: int, now: float) -> None:
        """Disconnect one client: send it redundant disconnect packets and free its slot."""
        client = self._slot(client_index)
        if client is not None:
            self._remove_client(client, DisconnectReason.SERVER, now, send_packets=True)

    def disconnect_all(self, now: float) -> None:
        """Disconnect every connected client (e.g. on shutdown)."""
        for index in self.connected_clients():
            self.disconnect(index, now)

    def _remove_client(self, client: _Client, reason: str, now: float, *, send_packets: bool) -> None:
        if send_packets:
            for _ in range(self.config.disconnect_packets):
                sequence = client.sequence
                client.sequence = sequence + 1
                self._send_to_client(client, ConnectionDisconnectPacket(sequence), now)
        index = client.index
        self._slots[index] = None
        del self._by_address[client.address]
        del self._by_id[client.client_id]
        heapq.heappush(self._free, index)
        self.stats["disconnects_" + reason] += 1
        if self.on_disconnect is not None:
            self.on_disconnect(index, reason)
