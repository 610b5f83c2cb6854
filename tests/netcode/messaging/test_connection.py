"""Two Connections over a simulated lossy, reordering, duplicating link with a fake clock."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.messaging.acks import AckConfig
from netcode.messaging.channels import Channel
from netcode.messaging.connection import BacklogFull, Connection, ConnectionConfig, Delivery, MessageTooLarge
from netcode.messaging.messages import DEFAULT_REGISTRY, Message
from tests.netcode.messaging.simlink import SimLink, run


def reliable(deliveries: list[Delivery]) -> list[bytes]:
    return [d.data for d in deliveries if d.channel is Channel.RELIABLE]


@pytest.mark.parametrize(("seed", "loss"), [(1, 0.2), (2, 0.25), (3, 0.3)])
def test_reliable_exactly_once_in_order_through_loss_reordering_and_duplication(seed, loss):
    a, b = Connection(), Connection()
    link = SimLink(seed=seed, loss=loss, duplicate=0.1, delay=0.03, jitter=0.04)
    sent_ab = [b"a->b %d" % i for i in range(400)]
    sent_ba = [b"b->a %d" % i for i in range(400)]
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now = 0.0
    for batch in range(8):  # keep sending while traffic flows
        for i in range(batch * 50, batch * 50 + 50):
            a.send(Channel.RELIABLE, sent_ab[i], now)
            b.send(Channel.RELIABLE, sent_ba[i], now)
        *_, now = run((a, b), link, 0.25, start=now, received=received)
    run((a, b), link, 5.0, start=now, received=received)
    assert reliable(received[1]) == sent_ab
    assert reliable(received[0]) == sent_ba
    assert a.stats(now).reliable_queued == 0
    assert link.dropped > 0 and a.stats(now).reliable_resent > 0


def test_fragmented_200kb_reliable_message_through_loss():
    a, b = Connection(), Connection()
    big = random.Random(5).randbytes(200_000)
    a.send(Channel.RELIABLE, b"before")
    a.send(Channel.RELIABLE, big)
    a.send(Channel.RELIABLE, b"after")
    link = SimLink(seed=9, loss=0.25, duplicate=0.05, delay=0.02, jitter=0.03)
    _, got, now = run((a, b), link, 8.0)
    assert reliable(got) == [b"before", big, b"after"]
    assert a.stats(now).reliable_queued == 0


def test_fragmented_unreliable_message_without_loss_and_reordered():
    a, b = Connection(), Connection()
    payload = random.Random(6).randbytes(5000)
    a.send(Channel.UNRELIABLE, payload)
    _, got, _ = run((a, b), SimLink(seed=4, jitter=0.05), 1.0)
    assert [d.data for d in got] == [payload]


def test_oversize_refused_at_the_sender_nothing_queued():
    a = Connection(ConnectionConfig(max_message_size=100_000))
    for channel in Channel:
        with pytest.raises(MessageTooLarge, match="exceeds the maximum message size of 100000"):
            a.send(channel, bytes(100_001))
    stats = a.stats(0.0)
    assert stats.reliable_queued == 0 and stats.unreliable_queued == 0


def test_unreliable_latest_wins_under_reordering_and_duplication():
    a, b = Connection(), Connection()
    link = SimLink(seed=8, loss=0.2, duplicate=0.3, delay=0.02, jitter=0.08)
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now = 0.0
    for index in range(300):
        a.send(Channel.UNRELIABLE, index.to_bytes(2, "little"), now)
        *_, now = run((a, b), link, 1 / 60, start=now, received=received)
    run((a, b), link, 1.0, start=now, received=received)
    values = [int.from_bytes(d.data, "little") for d in received[1]]
    assert values == sorted(set(values))  # strictly increasing: no stale, no duplicate
    assert 150 < len(values) < 300
    assert b.drops["unreliable_stale"] + b.drops["packet_duplicate"] > 0


def test_sequences_wrap_past_65535():
    config = ConnectionConfig(ack=AckConfig(initial_sequence=65520), initial_reliable_id=65450)
    a, b = Connection(config), Connection(config)
    link = SimLink(seed=12, loss=0.2, delay=0.02, jitter=0.02)
    messages = [b"%d" % i for i in range(300)]
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now = 0.0
    for i in range(0, 300, 10):
        for message in messages[i : i + 10]:
            a.send(Channel.RELIABLE, message, now)
        a.send(Channel.UNRELIABLE, b"u%d" % i, now)
        *_, now = run((a, b), link, 0.05, start=now, received=received)
    run((a, b), link, 3.0, start=now, received=received)
    assert reliable(received[1]) == messages
    assert a.acks.next_sequence < 65520  # the packet sequence wrapped
    assert a.reliable_sender.next_id == (65450 + 300) & 0xFFFF
    assert len([d for d in received[1] if d.channel is Channel.UNRELIABLE]) > 15


def test_rtt_estimate_close_to_the_simulated_delay():
    a, b = Connection(), Connection()
    link = SimLink(seed=3, delay=0.05, jitter=0.0)
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now = 0.0
    for _ in range(120):
        a.send(Channel.UNRELIABLE, b"input", now)
        b.send(Channel.UNRELIABLE, b"snapshot", now)
        *_, now = run((a, b), link, 1 / 60, start=now, received=received)
    stats = a.stats(now)
    # 100 ms round trip; the tick-driven simulation adds up to one tick per direction.
    assert stats.rtt is not None and 0.1 <= stats.rtt <= 0.1 + 2 / 60 + 0.001
    assert stats.packet_loss == 0.0 and stats.bytes_sent > 0 and stats.bytes_received > 0


def test_loss_estimate_tracks_the_link():
    a, b = Connection(), Connection()
    link = SimLink(seed=21, loss=0.25, delay=0.02)
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now = 0.0
    for _ in range(600):
        a.send(Channel.UNRELIABLE, b"x", now)
        b.send(Channel.UNRELIABLE, b"y", now)
        *_, now = run((a, b), link, 1 / 60, start=now, received=received)
    assert 0.15 < a.stats(now).packet_loss < 0.35


def test_peer_that_stops_acking_bounded_memory_then_disconnect():
    config = ConnectionConfig(reliable_window=64, backlog_timeout=1.0, ack_timeout=3.0)
    a, b = Connection(config), Connection(config)
    link = SimLink(seed=1, delay=0.01)
    received: tuple[list[Delivery], list[Delivery]] = ([], [])
    now, refused, disconnect_time = 0.0, 0, None
    for _ in range(600):  # 10 s; b receives but never answers
        try:
            a.send(Channel.RELIABLE, bytes(200), now)
        except BacklogFull:
            refused += 1
        *_, now = run((a, b), link, 1 / 60, start=now, received=received, mute=(False, True))
        assert a.stats(now).reliable_queued <= 64
        if disconnect_time is None and a.should_disconnect(now):
            disconnect_time = now
    assert refused > 0
    assert disconnect_time is not None and disconnect_time < 3.0
    assert "reliable backlog full" in (a.disconnect_reason or "")
    assert len(b.reliable_receiver._buffer) == 0  # everything b got was delivered, nothing piles up


def test_ack_timeout_when_nothing_is_ever_acked():
    a = Connection(ConnectionConfig(ack_timeout=2.0))
    a.send(Channel.RELIABLE, b"hello", 0.0)
    for step in range(200):
        a.generate_packets(step * 0.02)
    assert a.should_disconnect(4.0)
    assert "peer stopped acking" in (a.disconnect_reason or "")


def test_flooding_peer_is_throttled_then_disconnected():
    config = ConnectionConfig(max_packets_per_second=100, packet_burst=10, flood_timeout=1.0)
    a, b = Connection(ConnectionConfig(send_packets_per_second=1e6)), Connection(config)
    delivered = 0
    for step in range(2000):  # 1,000 packets/s for 2 s
        now = step * 0.001
        a.send(Channel.UNRELIABLE, b"spam", now)
        for packet in a.generate_packets(now):
            delivered += len(b.receive_packet(packet, now))
    assert b.drops["rate_limited"] > 1500
    assert delivered <= 100 * 2 + 10 + 1
    assert b.should_disconnect(2.0) and "rate limit exceeded" in (b.disconnect_reason or "")


def test_decoding_connection_delivers_messages_and_drops_invalid_ones():
    a, b = Connection(), Connection(registry=DEFAULT_REGISTRY)
    a.send(Channel.RELIABLE, Message("disconnect", {"reason": "done"}))
    a.send(Channel.RELIABLE, b"\xc1 not msgpack")
    _, got, _ = run((a, b), SimLink(), 0.5)
    assert [d.message for d in got] == [Message("disconnect", {"reason": "done"})]
    assert b.drops["message_invalid"] == 1


def test_ack_only_packets_wait_for_the_ack_delay_and_ride_on_packets_with_entries():
    client, server = Connection(), Connection(ConnectionConfig(ack_delay=0.025))
    client.send(Channel.UNRELIABLE, b"input")
    for packet in client.generate_packets(0.0):
        server.receive_packet(packet, 0.0)
    assert server.generate_packets(0.01) == []  # within the delay: no ack-only packet
    server.send(Channel.UNRELIABLE, b"snapshot")
    (packet,) = server.generate_packets(0.015)  # the acks ride on the snapshot
    client.receive_packet(packet, 0.015)
    assert server.generate_packets(0.05) == []  # nothing left to ack
    client.send(Channel.UNRELIABLE, b"input")
    for packet in client.generate_packets(0.06):
        server.receive_packet(packet, 0.06)
    assert server.generate_packets(0.07) == []
    (ack_only,) = server.generate_packets(0.086)  # nothing else came: the acks go out alone
    assert len(ack_only) == 9
    assert Connection().generate_packets(0.0) == []


def test_byte_budget_caps_each_tick():
    a = Connection()
    for _ in range(50):
        a.send(Channel.UNRELIABLE, bytes(500))
    packets = a.generate_packets(0.0, budget=3000)
    assert sum(len(p) for p in packets) <= 3000
    assert all(len(p) <= 1200 for p in packets)


# ------------------------------------------------------------------------------ hostile input


def _valid_traffic() -> list[bytes]:
    a = Connection()
    a.send(Channel.RELIABLE, b"hello")
    a.send(Channel.RELIABLE, bytes(3000))
    a.send(Channel.UNRELIABLE, bytes(2500))
    a.send(Channel.UNRELIABLE, b"u")
    return a.generate_packets(0.0)


VALID = _valid_traffic()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1300), max_size=8))
def test_receive_packet_never_raises_on_random_bytes(packets):
    connection = Connection(registry=DEFAULT_REGISTRY)
    for index, packet in enumerate(packets):
        assert isinstance(connection.receive_packet(packet, index * 0.01), list)
    assert connection.generate_packets(1.0) is not None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_receive_packet_never_raises_on_mutated_valid_packets(data):
    connection = Connection()
    for index, packet in enumerate(VALID):
        mutated = bytearray(packet)
        for _ in range(data.draw(st.integers(0, 4))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
        connection.receive_packet(bytes(mutated), index * 0.01)
    stats = connection.stats(1.0)
    assert stats.reliable_receive_buffered <= connection.config.reliable_window
    assert stats.reassembly_pending <= connection.config.reassembly_max_pending
