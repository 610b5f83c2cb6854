"""16-bit sequence arithmetic across the wrap, and the sequence ring buffer."""

from netcode.messaging.sequence import (
    SequenceBuffer,
    sequence_add,
    sequence_difference,
    sequence_greater_than,
    sequence_less_than,
)


def test_greater_than_wraps_around():
    assert sequence_greater_than(1, 0)
    assert sequence_greater_than(0, 65535)
    assert sequence_greater_than(10, 65530)
    assert not sequence_greater_than(65535, 0)
    assert not sequence_greater_than(5, 5)
    assert sequence_less_than(65535, 0)
    assert sequence_greater_than(32768, 0) and not sequence_greater_than(32769, 0)


def test_difference_and_add_are_signed_on_the_circle():
    assert sequence_difference(0, 65535) == 1
    assert sequence_difference(65535, 0) == -1
    assert sequence_difference(5, 65530) == 11
    assert sequence_add(65535, 1) == 0
    assert sequence_add(0, -1) == 65535
    for a in (0, 100, 65000, 65535):
        for n in (-300, -1, 0, 1, 300):
            assert sequence_difference(sequence_add(a, n), a) == n


def test_buffer_insert_get_and_overwrite_across_wrap():
    buffer: SequenceBuffer[int] = SequenceBuffer(16, initial_sequence=65530)
    for sequence in range(65530, 65530 + 40):
        assert buffer.insert(sequence & 0xFFFF, sequence)
    newest = (65530 + 39) & 0xFFFF
    assert buffer.sequence == (newest + 1) & 0xFFFF
    assert buffer.get(newest) == 65530 + 39
    # The 16 newest are held; anything older was overwritten and reads as absent.
    assert buffer.exists(sequence_add(newest, -15))
    assert not buffer.exists(sequence_add(newest, -16))
    assert not buffer.insert(sequence_add(newest, -17), 0)  # too old to store
    assert len(buffer) == 16


def test_buffer_skipping_ahead_clears_the_gap():
    buffer: SequenceBuffer[str] = SequenceBuffer(8)
    for sequence in range(8):
        buffer.insert(sequence, "old")
    buffer.insert(12, "new")  # skips 8..11: their slots held 0..3 and must now read as empty
    assert [buffer.exists(s) for s in range(13)] == [False] * 5 + [True] * 3 + [False] * 4 + [True]
    assert buffer.remove(12) == "new" and buffer.get(12) is None
    assert buffer.insert(20000, "far")  # a jump larger than the ring clears everything
    assert len(buffer) == 1
    assert not buffer.insert(60000, "past")  # more than half the circle ahead reads as the distant past
