"""Channels over the endpoints: messages between a ServerCore and ClientCores, and misbehaving peers dropped."""

from netcode.messaging.channels import Channel
from netcode.messaging.connection import ConnectionConfig
from netcode.messaging.peers import ClientChannels, ServerChannels
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.server import ServerConfig, ServerCore
from tests.netcode.transport.endpoint_helpers import (
    CLIENT_A,
    CLIENT_B,
    PRIVATE_KEY,
    PROTOCOL_ID,
    SERVER,
    Net,
    make_token,
)


class Ticking(Net):
    """The in-memory network, also ticking the channel layers each step."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: list = []

    def run(self, seconds: float, dt: float = 0.01) -> None:
        for _ in range(round(seconds / dt)):
            self.now += dt
            for endpoint in list(self.endpoints.values()):
                endpoint.update(self.now)
            for layer in self.layers:
                layer.update(self.now)
            self.flush()


def _world(config: ConnectionConfig | None = None):
    net = Ticking()
    got_server: list = []
    dropped: list = []
    server_channels = ServerChannels(
        config, on_message=lambda i, d: got_server.append((i, d.channel, d.data)),
        on_dropped=lambda i, r: dropped.append((i, r)), clock=lambda: net.now,
    )  # fmt: skip
    cfg = ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[SERVER])
    server = ServerCore(cfg, net.sender(SERVER), now=net.now, **server_channels.callbacks())
    server_channels.attach(server)
    net.endpoints[SERVER] = server
    net.layers.append(server_channels)
    return net, server, server_channels, got_server, dropped


def _client(net: Ticking, address, client_id: int, config: ConnectionConfig | None = None):
    got: list = []
    channels = ClientChannels(config, on_message=lambda d: got.append((d.channel, d.data)), clock=lambda: net.now)
    core = ClientCore(make_token(client_id=client_id), net.sender(address), now=net.now, **channels.callbacks())
    channels.attach(core)
    net.endpoints[address] = core
    net.layers.append(channels)
    core.connect(net.now)
    net.run(0.5)
    assert core.state == ClientState.CONNECTED
    return core, channels, got


def test_reliable_and_unreliable_messages_flow_both_ways_in_order():
    net, _server, server_channels, got_server, _ = _world()
    _, alice, got_alice = _client(net, CLIENT_A, 1)
    _, bob, got_bob = _client(net, CLIENT_B, 2)
    for k in range(20):
        assert alice.send(Channel.RELIABLE, f"a{k}".encode())
    assert bob.send(Channel.UNRELIABLE, b"pose")
    assert server_channels.broadcast(Channel.RELIABLE, b"pause") == 2
    net.run(0.3)
    from_alice = [data for i, ch, data in got_server if ch is Channel.RELIABLE]
    assert from_alice == [f"a{k}".encode() for k in range(20)]
    assert (1, Channel.UNRELIABLE, b"pose") in got_server
    assert got_alice == [(Channel.RELIABLE, b"pause")] and got_bob == [(Channel.RELIABLE, b"pause")]


def test_a_large_message_is_fragmented_across_payload_packets():
    net, _, _server_channels, got_server, _ = _world()
    _, alice, _ = _client(net, CLIENT_A, 1)
    scan = bytes(range(256)) * 400  # 100 KB
    assert alice.send(Channel.RELIABLE, scan)
    net.run(2.0)
    assert [data for _, _, data in got_server] == [scan]


def test_a_peer_that_stops_acking_is_dropped_with_a_reason():
    config = ConnectionConfig(ack_timeout=1.0)
    net, server, server_channels, _, dropped = _world(config)
    _, _alice, _ = _client(net, CLIENT_A, 1, config)
    net.muted.add(CLIENT_A)  # alice's headset goes silent: no acks, no keep-alives
    server_channels.send(0, Channel.RELIABLE, b"state you must ack")
    net.run(1.5)
    assert dropped and dropped[0][0] == 0 and dropped[0][1]
    assert server.client_count == 0 and server_channels.peers == []


def test_a_flooding_peer_is_throttled_then_dropped():
    config = ConnectionConfig(max_packets_per_second=100.0, packet_burst=20.0, flood_timeout=0.5)
    net, server, _server_channels, _, dropped = _world(config)
    core, _, _ = _client(net, CLIENT_A, 1)
    for _ in range(150):  # 1.5 s at 500 payload packets per second
        for _ in range(5):
            core.send_payload(b"\x00" * 40, net.now)
        net.run(0.01)
    assert len(dropped) == 1 and dropped[0][0] == 0 and dropped[0][1].startswith("rate limit exceeded")
    assert server.client_count == 0


def test_a_clients_drop_counts_are_read_without_its_stats():
    config = ConnectionConfig(max_packets_per_second=100.0, packet_burst=20.0, flood_timeout=5.0)
    net, _server, server_channels, _, _ = _world(config)
    core, _, _ = _client(net, CLIENT_A, 1)
    for _ in range(10):
        for _ in range(5):
            core.send_payload(b"\x00" * 40, net.now)
        net.run(0.01)
    drops = server_channels.drops(0)
    assert drops["rate_limited"] > 0 and drops == server_channels.stats(0).drops
    drops["rate_limited"] = 0  # a copy: the caller cannot change the connection's counts
    assert server_channels.drops(0)["rate_limited"] > 0
    assert server_channels.drops(7) is None


def test_flush_sends_only_the_named_clients_due_packets():
    net, server, server_channels, _, _ = _world()
    _client(net, CLIENT_A, 1)
    _client(net, CLIENT_B, 2)
    a, b = sorted(server_channels.peers)
    for index in (a, b):
        assert server_channels.send(index, Channel.UNRELIABLE, b"snapshot")
    net.queue.clear()
    server_channels.flush([b, 99], net.now)  # 99: not connected, ignored
    assert [destination for _, destination, _ in net.queue] == [server.client_address(b)]
    server_channels.update(net.now)  # the rest goes with the next update
    assert [destination for _, destination, _ in net.queue][1:] == [server.client_address(a)]
