"""The netcode 1.02 client endpoint as a sans-IO core (STANDARD.md, "Client State Machine").

``ClientCore`` takes a 2048-byte connect token and walks the standard's state machine:

* *sending connection request* to the token's first server address (10 Hz) until a challenge arrives,
* *sending connection response* (the echoed challenge token, 10 Hz) until a keep-alive arrives,
  which tells the client its slot index and the server's max clients,
* *connected*: payloads both ways, keep-alives when nothing else was sent for ``keep_alive_interval``.

Failures before *connected* (denied, no answer within the token's timeout) move on to the token's
next server address; with none left the client lands in the matching error state (negative values).
The whole attempt aborts with *connect token expired* once the token's lifetime (expire - create,
measured on this client's clock from ``connect``) has passed. A connected client that hears nothing for
the timeout goes to *connection timed out*; a disconnect packet from the server makes it
*disconnected*; ``disconnect`` sends redundant disconnect packets first.

Packets are accepted only from the current server address and only of the types the current state
expects (payloads before *connected* are discarded); everything else is counted in ``drops``.
Sans-IO: ``send`` is a callable and every call takes ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from enum import IntEnum

from netcode.transport.address import Address
from netcode.transport.connect_token import ConnectToken, ConnectTokenError
from netcode.transport.constants import MAX_PAYLOAD_BYTES, PacketType
from netcode.transport.crypto import PacketKey
from netcode.transport.packets import (
    ConnectionChallengePacket,
    ConnectionDeniedPacket,
    ConnectionDisconnectPacket,
    ConnectionKeepAlivePacket,
    ConnectionPayloadPacket,
    ConnectionRequestPacket,
    ConnectionResponsePacket,
    EncryptedPacket,
    decode_packet,
    encode_connection_request,
    encode_packet,
    encode_payload_packet,
)
from netcode.transport.replay import ReplayProtection

SendFn = Callable[[bytes, Address], None]


class ClientState(IntEnum):
    """Client states with the standard's numeric values (negative = error)."""

    CONNECT_TOKEN_EXPIRED = -6
    INVALID_CONNECT_TOKEN = -5
    CONNECTION_TIMED_OUT = -4
    CONNECTION_RESPONSE_TIMED_OUT = -3
    CONNECTION_REQUEST_TIMED_OUT = -2
    CONNECTION_DENIED = -1
    DISCONNECTED = 0
    SENDING_CONNECTION_REQUEST = 1
    SENDING_CONNECTION_RESPONSE = 2
    CONNECTED = 3


_ALLOWED: dict[ClientState, frozenset[PacketType]] = {
    ClientState.SENDING_CONNECTION_REQUEST: frozenset({PacketType.CONNECTION_DENIED, PacketType.CONNECTION_CHALLENGE}),
    ClientState.SENDING_CONNECTION_RESPONSE: frozenset(
        {PacketType.CONNECTION_DENIED, PacketType.CONNECTION_KEEP_ALIVE}
    ),
    ClientState.CONNECTED: frozenset(
        {PacketType.CONNECTION_KEEP_ALIVE, PacketType.CONNECTION_PAYLOAD, PacketType.CONNECTION_DISCONNECT}
    ),
}
_BYTES = (bytes, bytearray, memoryview)


class ClientCore:
    """Sans-IO netcode client: ``connect``, then feed it datagrams (``receive``) and time (``update``)."""

    def __init__(
        self,
        connect_token: bytes,
        send: SendFn,
        on_payload: Callable[[bytes], None] | None = None,
        on_state_change: Callable[[ClientState, ClientState], None] | None = None,
        now: float = 0.0,
        request_interval: float = 0.1,
        keep_alive_interval: float = 0.1,
        *,
        disconnect_packets: int = 10,
    ) -> None:
        self._send = send
        self.on_payload = on_payload
        self.on_state_change = on_state_change
        self.request_interval = request_interval
        self.keep_alive_interval = keep_alive_interval
        self.disconnect_packets = disconnect_packets
        self.drops: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._state = ClientState.DISCONNECTED
        self._time = now
        try:
            self.token: ConnectToken | None = ConnectToken.decode(connect_token)
        except ConnectTokenError:
            self.token = None
        self._server_index = 0
        self._server_address: Address | None = None
        self._send_key: PacketKey | None = None
        self._recv_key: PacketKey | None = None
        self._request_bytes = b""
        self._replay = ReplayProtection()
        self._sequence = 0
        self._connect_start = now
        self._last_send = -math.inf
        self._last_recv = now
        self._challenge: tuple[int, bytes] | None = None
        self._client_index = -1
        self._max_clients = 0

    # -- properties --------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def client_index(self) -> int:
        """Slot index the server gave us (-1 before connected)."""
        return self._client_index

    @property
    def max_clients(self) -> int:
        """The server's slot count, from its first keep-alive (0 before connected)."""
        return self._max_clients

    @property
    def server_address(self) -> Address | None:
        """The server address currently being tried or connected to."""
        return self._server_address

    @property
    def connected(self) -> bool:
        return self._state == ClientState.CONNECTED

    def _set_state(self, state: ClientState) -> None:
        old = self._state
        if old == state:
            return
        self._state = state
        if self.on_state_change is not None:
            self.on_state_change(old, state)

    # -- connecting --------------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start connecting to the token's first server address (sends the first request at once)."""
        self._time = now
        token = self.token
        if token is None:
            self._set_state(ClientState.INVALID_CONNECT_TOKEN)
            return
        self._connect_start = now
        self._server_index = 0
        self._send_key = PacketKey(token.client_to_server_key)
        self._recv_key = PacketKey(token.server_to_client_key)
        self._request_bytes = encode_connection_request(ConnectionRequestPacket.from_connect_token(token))
        self._client_index, self._max_clients = -1, 0
        self._begin_attempt(now)

    def _begin_attempt(self, now: float) -> None:
        assert self.token is not None
        self._server_address = self.token.server_addresses[self._server_index]
        self._replay.reset()
        self._challenge = None
        self._last_recv = now
        self._last_send = -math.inf
        self._set_state(ClientState.SENDING_CONNECTION_REQUEST)
        self._send_packets(now)

    def _fail(self, error: ClientState, now: float) -> None:
        """A failure while connecting: try the next server address, else enter ``error``."""
        assert self.token is not None
        if self._server_index + 1 < len(self.token.server_addresses):
            self._server_index += 1
            self._begin_attempt(now)
        else:
            self._set_state(error)

    def _token_lifetime(self) -> float:
        assert self.token is not None
        return float(self.token.expire_timestamp - self.token.create_timestamp)

    # -- receiving ---------------------------------------------------------------------------------

    def receive(self, data: bytes, address: Address, now: float) -> None:
        """Process one datagram. Never raises; ignored datagrams are counted in ``drops``."""
        self._time = now
        if not isinstance(data, _BYTES):
            self.drops["not_bytes"] += 1
            return
        self.stats["packets_in"] += 1
        self.stats["bytes_in"] += len(data)
        allowed = _ALLOWED.get(self._state)
        if allowed is None:
            self.drops["not_connecting"] += 1
            return
        if address is not self._server_address and address != self._server_address:
            self.drops["wrong_address"] += 1
            return
        assert self.token is not None
        packet, reason = decode_packet(
            data, protocol_id=self.token.protocol_id, allowed=allowed, key=self._recv_key, replay=self._replay
        )
        if packet is None:
            self.drops[reason] += 1
            return
        self._last_recv = now
        if isinstance(packet, ConnectionPayloadPacket):
            if self.on_payload is not None:
                self.on_payload(packet.payload)
        elif isinstance(packet, ConnectionKeepAlivePacket):
            if self._state == ClientState.SENDING_CONNECTION_RESPONSE:
                self._client_index, self._max_clients = packet.client_index, packet.max_clients
                self._set_state(ClientState.CONNECTED)
        elif isinstance(packet, ConnectionChallengePacket):
            self._challenge = (packet.challenge_token_sequence, packet.challenge_token_data)
            self._last_send = -math.inf
            self._set_state(ClientState.SENDING_CONNECTION_RESPONSE)
            self._send_packets(now)
        elif isinstance(packet, ConnectionDeniedPacket):
            self._fail(ClientState.CONNECTION_DENIED, now)
        elif isinstance(packet, ConnectionDisconnectPacket):
            self._reset()
            self._set_state(ClientState.DISCONNECTED)

    # -- sending -----------------------------------------------------------------------------------

    def _send_encrypted(self, packet: EncryptedPacket, now: float) -> None:
        assert self.token is not None
        self._send_datagram(encode_packet(packet, self._send_key, self.token.protocol_id), now)

    def _send_datagram(self, data: bytes, now: float) -> None:
        assert self._server_address is not None
        self._last_send = now
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._send(data, self._server_address)

    def _next_sequence(self) -> int:
        sequence = self._sequence
        self._sequence = sequence + 1
        return sequence

    def _send_packets(self, now: float) -> None:
        state = self._state
        if state == ClientState.SENDING_CONNECTION_REQUEST:
            if self._last_send + self.request_interval <= now:
                assert self._server_address is not None
                self._last_send = now
                self.stats["packets_out"] += 1
                self.stats["bytes_out"] += len(self._request_bytes)
                self._send(self._request_bytes, self._server_address)
        elif state == ClientState.SENDING_CONNECTION_RESPONSE:
            if self._last_send + self.request_interval <= now and self._challenge is not None:
                sequence, token_data = self._challenge
                self._send_encrypted(ConnectionResponsePacket(self._next_sequence(), sequence, token_data), now)
        elif state == ClientState.CONNECTED and self._last_send + self.keep_alive_interval <= now:
            self._send_encrypted(ConnectionKeepAlivePacket(self._next_sequence(), 0, 0), now)

    def send_payload(self, payload: bytes, now: float) -> bool:
        """Send 1..1200 bytes to the server; False unless connected and the size is valid."""
        if self._state != ClientState.CONNECTED or not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
            return False
        self._time = now
        assert self.token is not None and self._send_key is not None
        self._send_datagram(
            encode_payload_packet(self._next_sequence(), payload, self._send_key, self.token.protocol_id), now
        )
        return True

    # -- time --------------------------------------------------------------------------------------

    def update(self, now: float) -> None:
        """Resend requests/responses, send keep-alives, and apply token expiry and timeouts."""
        self._time = now
        state = self._state
        if state <= ClientState.DISCONNECTED:
            return
        assert self.token is not None
        connecting = state != ClientState.CONNECTED
        if connecting and now - self._connect_start >= self._token_lifetime():
            self._set_state(ClientState.CONNECT_TOKEN_EXPIRED)
            return
        timeout = self.token.timeout_seconds
        if timeout > 0 and self._last_recv + timeout <= now:
            if state == ClientState.SENDING_CONNECTION_REQUEST:
                self._fail(ClientState.CONNECTION_REQUEST_TIMED_OUT, now)
            elif state == ClientState.SENDING_CONNECTION_RESPONSE:
                self._fail(ClientState.CONNECTION_RESPONSE_TIMED_OUT, now)
            else:
                self._reset()
                self._set_state(ClientState.CONNECTION_TIMED_OUT)
            return
        self._send_packets(now)

    # -- disconnecting -----------------------------------------------------------------------------

    def disconnect(self, now: float) -> None:
        """Leave: if connected, send redundant disconnect packets; then go to *disconnected*."""
        self._time = now
        if self._state == ClientState.CONNECTED:
            for _ in range(self.disconnect_packets):
                self._send_encrypted(ConnectionDisconnectPacket(self._next_sequence()), now)
        if self._state > ClientState.DISCONNECTED:
            self._reset()
            self._set_state(ClientState.DISCONNECTED)

    def _reset(self) -> None:
        self._challenge = None
        self._client_index, self._max_clients = -1, 0
