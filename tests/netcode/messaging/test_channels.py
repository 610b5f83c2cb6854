"""Channel framing, the reliable queue bound, latest-wins unreliable delivery and the packet writer."""

from collections import Counter

import pytest

from netcode.messaging.channels import (
    BacklogFull,
    Channel,
    PacketWriter,
    ReliableReceiver,
    ReliableSender,
    UnreliableReceiver,
    UnreliableSender,
    encode_entry,
    parse_entries,
)
from netcode.messaging.fragments import MessageTooLarge, Reassembler


def test_entries_round_trip_and_malformed_ones_are_reasons():
    wire = encode_entry(Channel.RELIABLE, False, 65535, b"abc") + encode_entry(Channel.UNRELIABLE, True, 7, b"")
    entries, reason = parse_entries(wire, 0)
    assert reason is None
    assert [(e.channel, e.fragment, e.sequence, e.body) for e in entries] == [
        (Channel.RELIABLE, False, 65535, b"abc"),
        (Channel.UNRELIABLE, True, 7, b""),
    ]
    assert parse_entries(wire[:-1], 0) == ([], "entry_truncated")
    assert parse_entries(wire[:4], 0) == ([], "entry_truncated")
    assert parse_entries(b"\x04\x00\x00\x00\x00", 0) == ([], "entry_bad_flags")


def test_reliable_queue_is_bounded_and_says_backlog_full():
    sender = ReliableSender(window=8, max_queued_bytes=10_000)
    for _ in range(8):
        sender.send(b"m")
    with pytest.raises(BacklogFull, match="reliable backlog full: 8 entries"):
        sender.send(b"m")
    assert sender.queued == 8
    # Acks free room; an unacked oldest entry still pins the window (receiver window is relative to it).
    sender.on_acked(range(1, 8))
    with pytest.raises(BacklogFull):
        sender.send(b"m")
    sender.on_acked([0])
    sender.send(b"m")
    assert sender.queued == 1


def test_reliable_queue_byte_bound_and_oversize():
    sender = ReliableSender(window=1000, max_queued_bytes=3000, max_message_size=10_000)
    sender.send(bytes(2000))
    with pytest.raises(BacklogFull):
        sender.send(bytes(2000))
    with pytest.raises(MessageTooLarge):
        sender.send(bytes(10_001))


def test_reliable_receiver_delivers_in_order_once():
    drops: Counter[str] = Counter()
    receiver = ReliableReceiver(window=4, reassembler=Reassembler(), drops=drops)
    receiver.on_entry(1, False, b"b")
    assert receiver.deliver(0.0) == []
    receiver.on_entry(0, False, b"a")
    receiver.on_entry(1, False, b"b")
    assert receiver.deliver(0.0) == [b"a", b"b"]
    receiver.on_entry(0, False, b"a")  # already delivered
    receiver.on_entry(6, False, b"z")  # beyond the window
    assert drops == {"reliable_already_received": 2, "reliable_out_of_window": 1}


def test_unreliable_latest_wins():
    drops: Counter[str] = Counter()
    receiver = UnreliableReceiver(reassembler=Reassembler(), drops=drops)
    assert receiver.on_entry(5, False, b"five", 0.0) == b"five"
    assert receiver.on_entry(3, False, b"three", 0.0) is None
    assert receiver.on_entry(5, False, b"five", 0.0) is None
    assert receiver.on_entry(9, False, b"nine", 0.0) == b"nine"
    assert drops == {"unreliable_stale": 1, "unreliable_duplicate": 1}


def test_unreliable_send_queue_drops_oldest():
    sender = UnreliableSender(max_queued=3)
    for index in range(5):
        sender.send(bytes([index]))
    assert sender.queued == 3 and sender.drops["unreliable_send_overflow"] == 2
    assert sender.pop().endswith(b"\x02")


def test_writer_packs_reliable_first_within_packet_and_budget():
    reliable, unreliable = ReliableSender(), UnreliableSender()
    for index in range(30):
        reliable.send(bytes(100) + bytes([index]))
        unreliable.send(bytes(50))
    writer = PacketWriter(1200, 9)
    packets = writer.build(reliable, unreliable, 0.0, 0.1)
    assert all(9 + len(entries) <= 1200 for entries, _ in packets)
    assert [i for _, ids in packets for i in ids] == list(range(30))
    assert unreliable.queued == 0
    first_entries, _ = packets[0]
    assert parse_entries(first_entries, 0)[0][0].channel is Channel.RELIABLE
    # Nothing reliable is due again before the resend delay; a byte budget caps the total.
    for _ in range(30):
        unreliable.send(bytes(50))
    limited = writer.build(reliable, unreliable, 0.05, 0.1, budget=500)
    assert sum(9 + len(entries) for entries, _ in limited) <= 500
    assert all(not ids for _, ids in limited)
    again = writer.build(reliable, unreliable, 0.2, 0.1, max_packets=1)
    assert len(again) == 1 and again[0][1] == list(range(len(again[0][1])))


def test_unreliable_whole_message_entry_is_encode_entry():
    """A message that fits one entry is framed without the fragment path: the same bytes as encode_entry."""
    sender = UnreliableSender(single_limit=100, fragment_size=50, max_message_size=1000)
    sender.next_sequence = 65535
    for data in (b"", b"x", bytes(range(100)), bytearray(b"ab"), memoryview(b"cd")):
        sequence = sender.next_sequence
        sender.send(data)
        assert sender._queue[-1] == encode_entry(Channel.UNRELIABLE, False, sequence, bytes(data))
    assert sender.next_sequence == 4  # wrapped after 65535
    sender.send(bytes(101))  # fragmented: 3 entries of one sequence
    assert [parse_entries(w, 0)[0][0].fragment for w in list(sender._queue)[-3:]] == [True] * 3
    with pytest.raises(MessageTooLarge):
        UnreliableSender(single_limit=100, max_message_size=10).send(bytes(20))


@pytest.mark.parametrize("sizes, budget", [([10, 20, 30], None), ([500, 500, 500], None), ([300] * 4, 700), ([1], 5)])
def test_writer_unreliable_only_packing_is_next_fit(sizes, budget):
    """With nothing reliable queued the writer may put everything in one packet when it all fits, exactly as
    next-fit packing would."""

    def build(split: bool) -> list:
        unreliable = UnreliableSender()
        for index, size in enumerate(sizes):
            unreliable.send(bytes([index]) * size)
        reliable = ReliableSender()
        if split:  # a reliable entry sent and not due yet adds nothing but takes the general path
            reliable.send(b"r")
            reliable.mark_sent(0, 0.0)
        return PacketWriter(1200, 9).build(reliable, unreliable, 0.0, 0.1, budget), unreliable.queued

    assert build(False) == build(True)
