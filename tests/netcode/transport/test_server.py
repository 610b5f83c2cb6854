"""ServerCore + ClientCore handshakes over an in-memory link with a fake clock, and the server's refusals."""

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.transport.address import Address
from netcode.transport.client import ClientState
from netcode.transport.constants import CONNECTION_REQUEST_BYTES, PacketType
from netcode.transport.server import ServerConfig, ServerCore

from .endpoint_helpers import (
    CLIENT_A,
    CLIENT_B,
    PRIVATE_KEY,
    PROTOCOL_ID,
    SERVER,
    USER_DATA,
    Events,
    Net,
    connect,
    make_client,
    make_server,
    make_token,
)


def test_handshake_connects_and_reports_slot_and_user_data() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events, max_clients=4)
    client, _ = make_client(net, make_token(client_id=42))
    connect(net, client)
    assert client.state == ClientState.CONNECTED
    assert (client.client_index, client.max_clients) == (0, 4)
    assert server.client_count == 1 and server.connected_clients() == [0]
    assert server.client_id(0) == 42 and server.client_address(0) == CLIENT_A
    assert server.client_user_data(0) == USER_DATA.ljust(256, b"\0")
    assert events.connects == [(0, 42, USER_DATA.ljust(256, b"\0"), CLIENT_A)]
    sizes = [(src, len(data)) for src, _, data in net.log]
    assert sizes[0] == (CLIENT_A, CONNECTION_REQUEST_BYTES)  # request 1078
    assert sizes[1] == (SERVER, 1 + 8 + 8 + 300 + 16)  # challenge with a 2**63+ sequence: 333
    assert sizes[2] == (CLIENT_A, 1 + 1 + 8 + 300 + 16)  # response, client sequence 0
    assert sizes[3] == (SERVER, 1 + 1 + 8 + 16)  # keep-alive, per-client sequence 0


def test_payloads_both_ways_and_keep_alives_keep_it_alive() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events)
    client, received = make_client(net, make_token(timeout_seconds=2))
    connect(net, client)
    assert client.send_payload(b"input", net.now)
    assert server.send_payload(0, b"snapshot", net.now)
    net.flush()
    assert events.payloads == [(0, b"input")]
    assert received == [b"snapshot"]
    net.run(10.0, dt=0.05)  # 5 timeouts' worth of silence from the application
    assert client.state == ClientState.CONNECTED and server.client_count == 1
    assert server.stats["packets_out"] > 60  # keep-alives at ~10 Hz (every 0.1-0.15 s at dt 0.05)
    assert not client.send_payload(b"", net.now) and not client.send_payload(b"x" * 1201, net.now)
    assert not server.send_payload(1, b"nobody", net.now)


def test_unconfirmed_client_gets_keep_alive_before_payload() -> None:
    net = Net()
    server = make_server(net)
    client, received = make_client(net, make_token())
    client.connect(net.now)
    net.flush()  # request, challenge, response, keep-alive: the client is connected, server not confirmed
    net.log.clear()
    server.send_payload(0, b"p", net.now)
    kinds = [data[0] & 0x0F for src, _, data in net.log if src == SERVER]
    assert kinds == [PacketType.CONNECTION_KEEP_ALIVE, PacketType.CONNECTION_PAYLOAD]
    net.flush()
    client.send_payload(b"ack", net.now)
    net.flush()
    net.log.clear()
    server.send_payload(0, b"q", net.now)
    assert [data[0] & 0x0F for src, _, data in net.log if src == SERVER] == [PacketType.CONNECTION_PAYLOAD]
    net.flush()
    assert received == [b"p", b"q"]


def test_server_times_out_silent_client_and_client_times_out_silent_server() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events)
    client, _ = make_client(net, make_token(timeout_seconds=1))
    connect(net, client)
    net.muted.add(CLIENT_A)
    net.run(1.5)
    assert events.disconnects == [(0, "timeout")] and server.client_count == 0
    # The server's disconnect packets still reached the client.
    assert client.state == ClientState.DISCONNECTED

    net2 = Net()
    make_server(net2)
    client2, _ = make_client(net2, make_token(timeout_seconds=1))
    connect(net2, client2)
    net2.muted.add(SERVER)
    net2.run(1.5)
    assert client2.state == ClientState.CONNECTION_TIMED_OUT


def test_client_disconnect_frees_the_slot_and_it_is_reused() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events, max_clients=1)
    client, _ = make_client(net, make_token(client_id=1))
    connect(net, client)
    client.disconnect(net.now)
    sent = [data for src, _, data in net.log if src == CLIENT_A and data[0] & 0x0F == PacketType.CONNECTION_DISCONNECT]
    assert len(sent) == 10
    net.flush()
    assert client.state == ClientState.DISCONNECTED
    assert events.disconnects == [(0, "client_disconnect")] and server.client_count == 0
    assert server.drops["no_key"] == 9  # the redundant copies arrive after the slot was freed
    other, _ = make_client(net, make_token(client_id=2), CLIENT_B)
    connect(net, other)
    assert other.state == ClientState.CONNECTED and other.client_index == 0


def test_server_disconnect_reaches_the_client() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events)
    client, _ = make_client(net, make_token())
    connect(net, client)
    server.disconnect(0, net.now)
    net.flush()
    assert client.state == ClientState.DISCONNECTED
    assert events.disconnects == [(0, "server_disconnect")]
    assert client.drops["not_connecting"] == 9


def test_disconnect_all() -> None:
    net = Net()
    server = make_server(net)
    a, _ = make_client(net, make_token(client_id=1), CLIENT_A)
    b, _ = make_client(net, make_token(client_id=2), CLIENT_B)
    connect(net, a)
    connect(net, b)
    assert server.connected_clients() == [0, 1]
    server.disconnect_all(net.now)
    net.flush()
    assert server.client_count == 0
    assert a.state == b.state == ClientState.DISCONNECTED


def test_wrong_private_key_is_ignored() -> None:
    net = Net()
    server = make_server(net)
    client, _ = make_client(net, make_token(private_key=bytes(32)))
    connect(net, client, seconds=0.5)
    assert client.state == ClientState.SENDING_CONNECTION_REQUEST
    assert server.drops["token_invalid"] >= 5
    assert all(src == CLIENT_A for src, _, _ in net.log)  # the server never answered


def test_expired_token_is_ignored_by_the_server() -> None:
    net = Net()
    server = make_server(net)
    token = make_token(create_timestamp=int(time.time()) - 100, expire_seconds=30)
    client, _ = make_client(net, token)
    connect(net, client, seconds=0.3)
    assert server.drops["token_expired"] >= 3
    assert client.state == ClientState.SENDING_CONNECTION_REQUEST


def test_server_address_not_in_token_is_ignored() -> None:
    net = Net()
    server = make_server(net)
    client, _ = make_client(net, make_token(servers=[Address.parse("10.9.9.9:1")]))
    # Route the client's packets to our server anyway (as if the address were forwarded here).
    client.connect(net.now)
    request = net.log[0][2]
    server.receive(request, CLIENT_A, net.now)
    assert server.drops["server_address_not_in_token"] == 1 and len(net.log) == 1


def test_replayed_packets_are_dropped() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events)
    client, received = make_client(net, make_token())
    connect(net, client)
    client.send_payload(b"once", net.now)
    payload = net.queue[-1][2]
    net.flush()
    server.receive(payload, CLIENT_A, net.now)
    assert events.payloads == [(0, b"once")] and server.drops["replayed"] == 1
    server.send_payload(0, b"down", net.now)
    down = net.queue[-1][2]
    net.flush()
    client.receive(down, SERVER, net.now)
    assert received == [b"down"] and client.drops["replayed"] == 1


def test_same_token_from_another_address_is_rejected() -> None:
    net = Net()
    server = make_server(net)
    token = make_token(client_id=7)
    client, _ = make_client(net, token, CLIENT_A)
    client.connect(net.now)
    request = net.log[0][2]
    net.flush()
    assert server.pending_count == 0 and server.client_count == 1
    before = len(net.log)
    server.receive(request, CLIENT_B, net.now)  # an eavesdropper replays the request from elsewhere
    assert server.drops["client_id_already_connected"] == 1
    # Even after the owner left, the token is spent: it connected once.
    client.disconnect(net.now)
    net.flush()
    net.log.clear()
    server.receive(request, CLIENT_B, net.now)
    assert server.drops["token_already_connected"] == 1
    assert not [entry for entry in net.log if entry[0] == SERVER]
    assert before > 0


def test_a_token_that_connected_cannot_connect_again() -> None:
    """Reconnecting with the same token would restart both packet sequences under the same keys (ChaCha20
    nonce reuse): the server ignores it, even from the same address, and the client needs a fresh token."""
    net = Net()
    server = make_server(net)
    token = make_token(client_id=7)
    first, _ = make_client(net, token, CLIENT_A)
    connect(net, first)
    first.disconnect(net.now)
    net.flush()
    assert server.client_count == 0
    again, _ = make_client(net, token, CLIENT_A)
    again.connect(net.now)
    net.run(0.5)
    assert again.state != ClientState.CONNECTED and server.client_count == 0
    assert server.drops["token_already_connected"] >= 1
    fresh, _ = make_client(net, make_token(client_id=7), CLIENT_A)
    connect(net, fresh)
    assert fresh.state == ClientState.CONNECTED


def test_token_reused_from_another_address_while_pending_is_rejected() -> None:
    net = Net()
    server = make_server(net)
    client, _ = make_client(net, make_token(client_id=9), CLIENT_A)
    client.connect(net.now)
    request = net.log[0][2]
    server.receive(request, CLIENT_A, net.now)  # pending for A (a challenge goes out)
    server.receive(request, CLIENT_B, net.now)
    assert server.drops["token_reused"] == 1


def test_server_full_denies_and_client_ends_denied() -> None:
    net = Net()
    server = make_server(net, max_clients=1)
    first, _ = make_client(net, make_token(client_id=1), CLIENT_A)
    connect(net, first)
    second, _ = make_client(net, make_token(client_id=2), CLIENT_B)
    second.connect(net.now)
    net.flush()
    assert second.state == ClientState.CONNECTION_DENIED
    assert server.stats["denied_sent"] == 1 and server.client_count == 1
    denied = [data for src, dst, data in net.log if src == SERVER and dst == CLIENT_B]
    assert [len(d) for d in denied] == [1 + 8 + 16]


def test_full_after_challenge_denies_the_response() -> None:
    net = Net()
    server = make_server(net, max_clients=1)
    a, _ = make_client(net, make_token(client_id=1), CLIENT_A)
    b, _ = make_client(net, make_token(client_id=2), CLIENT_B)
    net.muted.add(SERVER)
    a.connect(net.now)
    b.connect(net.now)
    net.flush()
    assert server.pending_count == 2
    net.muted.clear()
    net.run(0.3)
    states = {a.state, b.state}
    assert states == {ClientState.CONNECTED, ClientState.CONNECTION_DENIED}
    assert server.client_count == 1


def test_wrong_type_for_state_is_dropped() -> None:
    net = Net()
    server = make_server(net)
    client, _ = make_client(net, make_token())
    connect(net, client)
    keep_alive = next(data for src, _, data in net.log if src == SERVER and data[0] & 0x0F == 4)
    challenge = next(data for src, _, data in net.log if src == SERVER and data[0] & 0x0F == 2)
    response = next(data for src, _, data in net.log if src == CLIENT_A and data[0] & 0x0F == 3)
    client.receive(challenge, SERVER, net.now)  # a challenge while connected
    server.receive(response, CLIENT_A, net.now)  # a late response from a connected address
    server.receive(keep_alive, CLIENT_A, net.now)  # a server-to-client type sent to the server
    assert client.drops["type_not_allowed"] == 1
    assert server.drops["type_not_allowed"] == 1 and server.drops["decrypt_failed"] == 1
    client.receive(keep_alive, Address.parse("10.6.6.6:1"), net.now)
    assert client.drops["wrong_address"] == 1
    assert client.state == ClientState.CONNECTED


def test_pending_client_expires() -> None:
    net = Net()
    server = make_server(net)
    client, _ = make_client(net, make_token(timeout_seconds=1))
    net.muted.add(CLIENT_A)
    client.connect(net.now)
    net.muted.clear()
    net.queue.append((CLIENT_A, SERVER, net.log[0][2]))
    net.endpoints.pop(CLIENT_A)  # the challenge goes nowhere
    net.flush()
    assert server.pending_count == 1
    net.run(1.1)
    assert server.pending_count == 0


def test_rate_limit_drops_a_flood() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events, max_packets_per_second_per_client=50)
    client, _ = make_client(net, make_token())
    connect(net, client)
    for i in range(200):
        client.send_payload(bytes([i % 256]) + b"x", net.now)
    net.flush()
    assert 40 <= len(events.payloads) <= 51
    assert server.drops["rate_limited"] >= 149


def test_config_hides_the_private_key() -> None:
    cfg = ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[SERVER])
    assert PRIVATE_KEY.hex() not in repr(cfg) and str(PRIVATE_KEY) not in repr(cfg)


# -- property-based: garbage never raises and never earns a reply larger than itself -----------------


def _valid_packets() -> list[bytes]:
    net = Net()
    make_server(net)
    client, _ = make_client(net, make_token())
    connect(net, client)
    client.send_payload(b"hello", net.now)
    client.disconnect(net.now)
    return [data for src, _, data in net.log if src == CLIENT_A]


VALID = _valid_packets()


def _fresh_server() -> tuple[ServerCore, list[tuple[bytes, Address]]]:
    out: list[tuple[bytes, Address]] = []
    cfg = ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[SERVER])
    return ServerCore(cfg, lambda data, address: out.append((data, address))), out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1400))
def test_random_bytes_never_raise_or_amplify(data: bytes) -> None:
    server, out = _fresh_server()
    server.receive(data, CLIENT_A, 1.0)
    assert all(len(reply) <= len(data) for reply, _ in out)
    assert sum(server.drops.values()) + server.stats["challenges_sent"] == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 1400), st.integers(0, 255)), max_size=4),
    st.integers(0, 1400),
    st.sampled_from([CLIENT_A, CLIENT_B]),
)
def test_mutated_packets_never_raise_or_amplify(
    base: bytes, flips: list[tuple[int, int]], cut: int, source: Address
) -> None:
    server, out = _fresh_server()
    data = bytearray(base)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    data = bytes(data[: max(cut, 1)]) if cut < len(data) else bytes(data)
    server.receive(data, source, 1.0)
    server.receive(data, source, 1.1)  # a replay of whatever it was
    server.update(2.0)
    assert all(len(reply) <= len(data) for reply, _ in out)
    assert server.client_count == 0


# -- budgets: cheap refusal before decryption, and a spoofer cannot spend a connected client's budget ------


def test_a_flood_of_requests_from_one_address_is_refused_before_decryption() -> None:
    net = Net()
    server = make_server(net, max_unauthenticated_per_second_per_address=5, max_unauthenticated_per_second=None)
    forged = bytes(CONNECTION_REQUEST_BYTES)  # version bytes wrong: it would be dropped by decode_packet anyway
    for _ in range(100):
        server.receive(forged, CLIENT_B, net.now)
    assert server.drops["unauthenticated_rate_limited_address"] == 95
    assert sum(v for k, v in server.drops.items() if not k.startswith("unauthenticated")) == 5
    # the budget refills at its rate: 1 s later the address may try again (5 more)
    for _ in range(10):
        server.receive(forged, CLIENT_B, net.now + 1.0)
    assert server.drops["unauthenticated_rate_limited_address"] == 100


def test_many_spoofed_sources_are_bounded_by_the_server_budget_and_the_table_stays_bounded() -> None:
    net = Net()
    server = make_server(
        net, max_unauthenticated_per_second_per_address=5, max_unauthenticated_per_second=50, tracked_sources=64
    )
    forged = bytes(CONNECTION_REQUEST_BYTES)
    for i in range(1000):
        server.receive(forged, Address.parse(f"10.0.{i // 250}.{i % 250}:4000"), net.now)
    assert server.drops["unauthenticated_rate_limited_server"] == 950
    assert len(server._sources) == 64


def test_a_real_client_still_connects_past_a_forged_flood_from_elsewhere() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events, max_unauthenticated_per_second_per_address=5)
    forged = bytes(CONNECTION_REQUEST_BYTES)
    for _ in range(500):
        server.receive(forged, CLIENT_B, net.now)
    client, _ = make_client(net, make_token())
    connect(net, client)
    assert client.state is ClientState.CONNECTED and len(events.connects) == 1


def test_garbage_spoofed_from_a_connected_address_does_not_spend_its_budget() -> None:
    net, events = Net(), Events()
    server = make_server(net, events=events, max_packets_per_second_per_client=50)
    client, _ = make_client(net, make_token())
    connect(net, client)
    garbage = bytes([PacketType.CONNECTION_PAYLOAD | 0x10]) + b"\x01" + bytes(40)  # 1 sequence byte, no valid MAC
    for _ in range(1000):  # spoofed from the client's own address
        server.receive(garbage, CLIENT_A, net.now)
    assert server.drops["decrypt_failed"] == 1000 and server.drops["rate_limited"] == 0
    for i in range(20):
        client.send_payload(bytes([i]) + b"real", net.now)
    net.flush()
    assert len(events.payloads) == 20  # every real packet got through at once
    assert server.is_connected(0)


def test_budget_config_is_validated() -> None:
    for bad in ({"max_unauthenticated_per_second_per_address": 0}, {"max_unauthenticated_per_second": -1.0}):
        try:
            ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[SERVER], **bad)
        except ValueError as exc:
            assert "must be positive" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
    try:
        ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[SERVER], tracked_sources=0)
    except ValueError:
        pass
    else:
        raise AssertionError("tracked_sources=0 accepted")
