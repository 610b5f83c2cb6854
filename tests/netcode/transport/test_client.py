"""ClientCore's state machine (STANDARD.md "Client State Machine"), driven against ServerCore in memory."""

from netcode.transport.address import Address
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.constants import PacketType

from .endpoint_helpers import CLIENT_A, SERVER, Net, connect, make_client, make_server, make_token


def test_state_values_match_the_standard() -> None:
    assert [s.value for s in ClientState] == list(range(-6, 4))
    assert ClientState.CONNECT_TOKEN_EXPIRED == -6 and ClientState.CONNECTED == 3


def test_state_changes_are_reported_in_order() -> None:
    net = Net()
    make_server(net)
    changes: list[tuple[ClientState, ClientState]] = []
    client = ClientCore(make_token(), net.sender(CLIENT_A), on_state_change=lambda a, b: changes.append((a, b)))
    net.endpoints[CLIENT_A] = client
    connect(net, client)
    client.disconnect(net.now)
    assert [new for _, new in changes] == [
        ClientState.SENDING_CONNECTION_REQUEST,
        ClientState.SENDING_CONNECTION_RESPONSE,
        ClientState.CONNECTED,
        ClientState.DISCONNECTED,
    ]


def test_requests_resend_at_the_request_interval() -> None:
    net = Net()
    client, _ = make_client(net, make_token(timeout_seconds=5))
    client.connect(net.now)
    net.run(1.0, dt=0.01)
    requests = [data for src, _, data in net.log if src == CLIENT_A]
    assert 10 <= len(requests) <= 11 and all(len(r) == 1078 and r[0] == 0 for r in requests)


def test_payload_before_connected_is_discarded() -> None:
    net = Net()
    server = make_server(net)
    client, received = make_client(net, make_token())
    net.muted.add(CLIENT_A)
    client.connect(net.now)  # request never arrives: the client stays in sending-request
    net.muted.clear()
    connect_net = Net()
    other_server = make_server(connect_net)
    other_client, _ = make_client(connect_net, make_token())
    connect(connect_net, other_client)
    other_server.send_payload(0, b"early", connect_net.now)
    payload = connect_net.queue[-1][2]
    client.receive(payload, SERVER, net.now)
    assert received == [] and client.drops["type_not_allowed"] == 1
    assert server.client_count == 0


def test_packets_ignored_when_disconnected() -> None:
    client = ClientCore(make_token(), lambda d, a: None)
    client.receive(b"\x15\x00" + bytes(20), SERVER, 0.0)
    assert client.drops["not_connecting"] == 1
    assert not client.send_payload(b"x", 0.0)


def test_receive_never_raises_on_garbage() -> None:
    net = Net()
    make_server(net)
    client, _ = make_client(net, make_token())
    connect(net, client)
    for data in (b"", b"\x00", bytes(1078), b"\xff" * 40, bytes([PacketType.CONNECTION_PAYLOAD | 0x80]) * 30):
        client.receive(data, SERVER, net.now)
    client.receive(None, SERVER, net.now)  # type: ignore[arg-type]
    assert client.state == ClientState.CONNECTED
    assert sum(client.drops.values()) == 6


def test_client_gives_up_when_the_token_lifetime_has_passed() -> None:
    net = Net()
    client, _ = make_client(net, make_token(expire_seconds=2, timeout_seconds=-1))
    client.connect(net.now)
    net.run(2.5, dt=0.05)
    assert client.state == ClientState.CONNECT_TOKEN_EXPIRED


def test_first_server_silent_client_moves_to_the_second() -> None:
    net = Net()
    second = Address.parse("127.0.0.9:40001")
    server = make_server(net, second)
    client, _ = make_client(net, make_token(servers=[SERVER, second], timeout_seconds=1))
    client.connect(net.now)
    assert client.server_address == SERVER
    net.run(1.2)
    assert client.server_address == second
    net.run(0.2)
    assert client.state == ClientState.CONNECTED and server.client_count == 1


def test_all_servers_silent_request_times_out() -> None:
    net = Net()
    client, _ = make_client(net, make_token(servers=[SERVER, Address.parse("127.0.0.9:1")], timeout_seconds=1))
    client.connect(net.now)
    net.run(2.5)
    assert client.state == ClientState.CONNECTION_REQUEST_TIMED_OUT


def test_response_timeout_when_server_never_confirms() -> None:
    net = Net()
    make_server(net)
    client, _ = make_client(net, make_token(timeout_seconds=1))
    drop_keep_alives = {"on": True}

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if drop_keep_alives["on"] and src == SERVER and data[0] & 0x0F == PacketType.CONNECTION_KEEP_ALIVE:
            net.endpoints.pop(dst, None)  # the client never hears the keep-alive

    net.tap = tap
    client.connect(net.now)
    net.flush()
    net.endpoints[CLIENT_A] = client
    assert client.state == ClientState.SENDING_CONNECTION_RESPONSE
    net.muted.add(SERVER)
    net.run(1.2)
    assert client.state == ClientState.CONNECTION_RESPONSE_TIMED_OUT


def test_invalid_token_bytes() -> None:
    client = ClientCore(b"\x00" * 10, lambda d, a: None)
    client.connect(0.0)
    assert client.state == ClientState.INVALID_CONNECT_TOKEN
