"""Packet header acks: exact bitfields, newly-acked reporting, RTT, loss, wrap-around."""

import random

from netcode.messaging.acks import HEADER_SIZE, AckConfig, AckEndpoint, PacketHeader, parse_header


def exchange(sender: AckEndpoint, receiver: AckEndpoint, now: float, deliver: bool = True) -> PacketHeader:
    """Sender writes a header; if delivered, the receiver records it. Returns the header."""
    header, _ = parse_header(sender.write_header(now, HEADER_SIZE, ack_eliciting=True))
    assert header is not None
    if deliver:
        assert receiver.check_sequence(header.sequence) is None
        receiver.on_packet_received(header, now, HEADER_SIZE)
    return header


def test_ack_bitfield_is_exact_for_a_random_reception_pattern():
    rng = random.Random(7)
    a, b = AckEndpoint(), AckEndpoint()
    received = set()
    for sequence in range(200):
        delivered = rng.random() < 0.6
        exchange(a, b, 0.0, delivered)
        if delivered:
            received.add(sequence)
        ack = max(received)
        assert b.ack == ack
        expected = sum(1 << i for i in range(32) if (ack - 1 - i) in received)
        assert b.ack_bits == expected


def test_out_of_order_reception_sets_the_right_bits_and_duplicates_are_refused():
    a, b = AckEndpoint(), AckEndpoint()
    headers = [parse_header(a.write_header(0.0, HEADER_SIZE, True))[0] for _ in range(5)]
    for index in (4, 1, 3):
        b.on_packet_received(headers[index], 0.0, HEADER_SIZE)
    assert b.ack == 4 and b.ack_bits == 0b101  # 3 and 1 received, 2 not
    assert b.check_sequence(3) == "packet_duplicate"
    assert b.check_sequence(2) is None


def test_newly_acked_reported_once_each():
    a, b = AckEndpoint(), AckEndpoint()
    for _ in range(10):
        exchange(a, b, 0.0, deliver=True)
    reply, _ = parse_header(b.write_header(0.1, HEADER_SIZE, True))
    assert sorted(a.on_packet_received(reply, 0.1, HEADER_SIZE)) == list(range(10))
    reply, _ = parse_header(b.write_header(0.2, HEADER_SIZE, True))
    assert a.on_packet_received(reply, 0.2, HEADER_SIZE) == []


def test_acks_survive_the_wrap_past_65535():
    a = AckEndpoint(AckConfig(initial_sequence=65500))
    b = AckEndpoint()
    acked: list[int] = []
    for step in range(200):
        now = step * 0.01
        exchange(a, b, now, deliver=step % 3 != 0)
        reply, _ = parse_header(b.write_header(now, HEADER_SIZE, True))
        acked += a.on_packet_received(reply, now, HEADER_SIZE)
    expected = [(65500 + s) & 0xFFFF for s in range(200) if s % 3 != 0]
    assert sorted(acked) == sorted(expected)
    assert a.next_sequence == (65500 + 200) & 0xFFFF


def test_rtt_and_loss_estimates():
    rng = random.Random(1)
    a, b = AckEndpoint(), AckEndpoint()
    in_flight: list[tuple[float, PacketHeader]] = []
    for step in range(2000):
        now = step * 0.005
        header, _ = parse_header(a.write_header(now, HEADER_SIZE, True))
        if rng.random() > 0.1:
            in_flight.append((now + 0.04, header))
        while in_flight and in_flight[0][0] <= now:
            _, h = in_flight.pop(0)
            b.on_packet_received(h, now, HEADER_SIZE)
        # b acks immediately over a perfect 40 ms return path.
        reply, _ = parse_header(b.write_header(now, HEADER_SIZE, False))
        a_time = now + 0.04
        a.on_packet_received(reply, a_time, HEADER_SIZE)
    assert a.rtt is not None and abs(a.rtt - 0.08) < 0.01
    assert abs(a.packet_loss(now + 0.04) - 0.1) < 0.05
    assert a.bytes_sent == 2000 * HEADER_SIZE


def test_truncated_and_wrong_version_headers_are_reasons_not_exceptions():
    assert parse_header(b"\x01\x00") == (None, "packet_truncated")
    assert parse_header(b"\x02" + bytes(8)) == (None, "packet_bad_version")


def test_each_sent_packet_is_reported_acked_once_whatever_headers_repeat_or_reorder():
    rng = random.Random(11)
    endpoint = AckEndpoint()
    for _ in range(3000):  # past the 16-bit wrap of neither side, but past the sent ring's 1024
        endpoint.write_header(0.0, 9, ack_eliciting=True)
    acked: set[int] = set()
    newest = 2000
    for _ in range(3000):
        newest = min(2999, newest + rng.choice([0, 1, 1, 2, -3, -40]))
        bits = rng.getrandbits(32)
        carried = {newest} | {newest - 1 - i for i in range(32) if bits >> i & 1}
        newly = endpoint._process_acks(PacketHeader(0, newest, bits), 0.0)
        assert len(newly) == len(set(newly)) and not acked & set(newly)
        acked |= set(newly)
        assert carried - {s for s in carried if s <= 2999 - 1024} <= acked  # all still in the ring are acked
