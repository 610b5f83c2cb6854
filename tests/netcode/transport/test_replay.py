"""Replay window: 256 entries, same decisions as the reference implementation."""

from netcode.transport.replay import ReplayProtection


def receive(replay: ReplayProtection, sequence: int) -> bool:
    """Accept-and-record, as the decoder does after a successful decryption."""
    if replay.already_received(sequence):
        return False
    replay.advance(sequence)
    return True


def test_first_packets_and_duplicates():
    replay = ReplayProtection()
    assert receive(replay, 0)
    assert not receive(replay, 0)
    assert receive(replay, 1)
    assert not receive(replay, 1)


def test_out_of_order_within_the_window_is_accepted_once():
    replay = ReplayProtection()
    for sequence in (10, 5, 7, 6):
        assert receive(replay, sequence)
    for sequence in (10, 5, 7, 6):
        assert not receive(replay, sequence)
    assert replay.most_recent_sequence == 10


def test_window_edge():
    replay = ReplayProtection()
    assert receive(replay, 1000)
    assert replay.already_received(1000 - 256)  # sequence + 256 <= most recent: too old
    assert not replay.already_received(1000 - 255)
    assert receive(replay, 1000 - 255)


def test_far_future_moves_the_window():
    replay = ReplayProtection()
    assert receive(replay, 3)
    assert receive(replay, 1_000_000)
    assert replay.already_received(4)  # now far behind
    assert receive(replay, 999_999)
    assert not receive(replay, 1_000_000)


def test_slot_reuse_keeps_the_newer_sequence():
    replay = ReplayProtection()
    assert receive(replay, 260)
    assert replay.already_received(4)  # same slot as 260, and outside the window
    assert receive(replay, 261)
    assert receive(replay, 6)  # 6 + 256 > 261: inside the window, slot empty
    assert not receive(replay, 6)


def test_reset_forgets():
    replay = ReplayProtection()
    receive(replay, 500)
    replay.reset()
    assert replay.most_recent_sequence == 0
    assert receive(replay, 0)
    assert receive(replay, 500)


def test_sixty_four_bit_sequences():
    replay = ReplayProtection()
    top = (1 << 64) - 1
    assert receive(replay, top - 1)
    assert receive(replay, top)
    assert not receive(replay, top)
    assert replay.already_received(top - 256)
