"""Fragmentation and bounded, never-raising reassembly."""

import random
from collections import Counter

import pytest

from netcode.messaging.fragments import FRAGMENT_HEADER, MessageTooLarge, Reassembler, split_message


def test_split_and_reassemble_in_any_order():
    data = random.Random(2).randbytes(10_000)
    bodies = split_message(data, 77, fragment_size=1024)
    assert len(bodies) == 10
    random.Random(3).shuffle(bodies)
    reassembler = Reassembler()
    results = [reassembler.add(body, 0.0) for body in bodies]
    assert results[:-1] == [None] * 9
    assert results[-1] == (77, data)
    assert reassembler.pending == 0


def test_oversize_is_refused_at_the_sender_with_a_clear_error():
    with pytest.raises(MessageTooLarge, match="exceeds the maximum message size of 1000 bytes"):
        split_message(bytes(1001), 0, fragment_size=100, max_message_size=1000)


def fragment(message_id: int, fragment_id: int, count: int, data: bytes = b"x") -> bytes:
    return FRAGMENT_HEADER.pack(message_id, fragment_id, count) + data


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x01\x00", "fragment_truncated"),
        (fragment(1, 0, 0), "fragment_bad_count"),
        (fragment(1, 0, 1000), "fragment_bad_count"),  # more than max_message_size allows
        (fragment(1, 5, 5), "fragment_out_of_range"),
        (fragment(1, 0, 3, b""), "fragment_bad_size"),
        (fragment(1, 0, 3, bytes(2000)), "fragment_bad_size"),
    ],
)
def test_bad_fragment_headers_are_dropped_with_a_reason(body, reason):
    drops: Counter[str] = Counter()
    reassembler = Reassembler(fragment_size=1024, max_message_size=64 * 1024, drops=drops)
    assert reassembler.add(body, 0.0) is None
    assert drops == {reason: 1}


def test_inconsistent_count_and_duplicates_are_dropped():
    reassembler = Reassembler()
    assert reassembler.add(fragment(9, 0, 3), 0.0) is None
    assert reassembler.add(fragment(9, 1, 4), 0.0) is None
    assert reassembler.add(fragment(9, 0, 3), 0.0) is None
    assert reassembler.drops == {"fragment_inconsistent_count": 1, "fragment_duplicate": 1}
    assert reassembler.add(fragment(9, 1, 3, b"y"), 0.0) is None
    assert reassembler.add(fragment(9, 2, 3, b"z"), 0.0) == (9, b"xyz")


def test_pending_messages_are_bounded_and_time_out():
    reassembler = Reassembler(max_pending=3, timeout=1.0)
    for message_id in range(10):
        reassembler.add(fragment(message_id, 0, 2), 0.0)
    assert reassembler.pending == 3 and reassembler.pending_ids() == [7, 8, 9]
    assert reassembler.drops["reassembly_evicted"] == 7
    reassembler.expire(1.5)
    assert reassembler.pending == 0 and reassembler.drops["reassembly_timeout"] == 3


def test_total_size_is_bounded_even_with_large_fragments():
    reassembler = Reassembler(fragment_size=100, max_fragment_data=1000, max_message_size=1000)
    assert reassembler.add(fragment(1, 0, 10, bytes(600)), 0.0) is None
    assert reassembler.add(fragment(1, 1, 10, bytes(600)), 0.0) is None
    assert reassembler.drops["reassembly_too_large"] == 1 and reassembler.pending == 0
